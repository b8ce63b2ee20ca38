-- Every Lua example in README.md and docs/*.md runs, and prints what its
-- "--> " comments say.
local util = require "spec.helpers.util"

local function blocks(path)
  local text = util.read(path) or ""
  local out = {}
  for code in text:gmatch("```lua\n(.-)```") do out[#out + 1] = code end
  return out
end

local function expectations(code)
  local wanted = {}
  for line in code:gmatch("[^\n]+") do
    local want = line:match("%-%->%s*(.-)%s*$")
    if want and line:match("print") then
      wanted[#wanted + 1] = (want:gsub("%s+", " "))
    end
  end
  return wanted
end

local files = { "README.md" }
local p = io.popen("ls docs/*.md 2>/dev/null")
for f in p:lines() do files[#files + 1] = f end
p:close()

describe("documentation examples", function()
  for _, file in ipairs(files) do
    for i, code in ipairs(blocks(file)) do
      it(("%s example %d runs"):format(file, i), function()
        local prelude = ("package.path = %q\npackage.cpath = %q\n")
          :format(package.path, package.cpath)
        local h = util.spawn_lua(prelude .. code)
        -- a bound that catches a hang, not a slow machine: these run in
        -- well under a second when idle
        local code_ = util.wait_exit(h, 120)
        local out = (util.read(h.out) or ""):gsub("[ \t]+", " ")
        local err = util.read(h.err) or ""
        util.cleanup(h)
        assert.are.equal(0, code_, code_ == nil and
          "still running after 120 s; stdout:\n" .. out .. "\nstderr:\n" ..
          err or err)
        local pos = 1
        for _, want in ipairs(expectations(code)) do
          local s, e = out:find(want, pos, true)
          assert.is_truthy(s, ("%q not printed (in order) in:\n%s")
            :format(want, out))
          pos = e + 1
        end
      end)
    end
  end
end)

describe("examples/quickstart.lua", function()
  it("fetches 10 items concurrently, shows a future and an error", function()
    local h = util.spawn_lua(("package.path = %q\npackage.cpath = %q\n")
      :format(package.path, package.cpath) ..
      util.read("examples/quickstart.lua"))
    local code = util.wait_exit(h, 120)
    local out = util.read(h.out) or ""
    local err = util.read(h.err) or ""
    util.cleanup(h)
    assert.are.equal(0, code, err)
    local secs = tonumber(out:match("fetched 10 items in ([%d.]+) s"))
    assert.is_truthy(secs, out)
    -- one after the other they would take 2 s or more, however idle the
    -- machine; anything less shows they overlapped, however busy it is
    assert.is_true(secs >= 0.19 and secs < 2.0, out)
    assert.matches("item 1, item 2, .*item 10", out)
    assert.matches("future result:%s+144", out)
    assert.matches("error crossed back:%s+false", out)
    assert.matches("cannot fetch the moon\n%[loop thread%] stack traceback:",
      out)
  end)
end)
