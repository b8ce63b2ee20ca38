-- The exact docs check: every Lua example in README.md and docs/*.md runs,
-- and what it prints equals, line by line, its "-->" comments (one output
-- line each, in order) or the ```output block under it. Whitespace runs
-- compare as one space. (It once only looked for substrings, and three
-- examples printed something else: a generator's "1 2 4", a DNS lookup's
-- trailing nil, and pcall's leading false.)
local util = require "spec.helpers.util"

local function normalize(s)
  return (s:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", ""))
end

-- The examples of one markdown file: { code =, line =, wanted = {...} }.
local function examples(path)
  local lines = {}
  for l in ((util.read(path) or "") .. "\n"):gmatch("([^\n]*)\n") do
    lines[#lines + 1] = l
  end
  local out, i = {}, 1
  while i <= #lines do
    if lines[i]:match("^```lua%s*$") then
      local ex = { line = i, code = {}, wanted = {} }
      i = i + 1
      while i <= #lines and not lines[i]:match("^```%s*$") do
        local l = lines[i]
        ex.code[#ex.code + 1] = l
        local want = l:match("^%-%->(.*)$") or l:match("%s%-%->(.*)$")
        if want then ex.wanted[#ex.wanted + 1] = normalize(want) end
        i = i + 1
      end
      local j = i + 1
      while j <= #lines and lines[j]:match("^%s*$") do j = j + 1 end
      if lines[j] and lines[j]:match("^```output%s*$") then
        assert(#ex.wanted == 0, ("%s:%d: both --> comments and an output " ..
          "block"):format(path, ex.line))
        j = j + 1
        while j <= #lines and not lines[j]:match("^```%s*$") do
          ex.wanted[#ex.wanted + 1] = normalize(lines[j])
          j = j + 1
        end
        i = j
      end
      ex.code = table.concat(ex.code, "\n") .. "\n"
      out[#out + 1] = ex
    end
    i = i + 1
  end
  return out
end

local function output_lines(text)
  local got = {}
  for l in (text .. "\n"):gmatch("([^\n]*)\n") do got[#got + 1] = normalize(l) end
  while got[#got] == "" do got[#got] = nil end
  return got
end

local files = { "README.md" }
local p = io.popen("ls docs/*.md 2>/dev/null")
for f in p:lines() do files[#files + 1] = f end
p:close()

describe("documentation examples, exactly", function()
  for _, file in ipairs(files) do
    for _, ex in ipairs(examples(file)) do
      it(("%s:%d prints what it says"):format(file, ex.line), function()
        local prelude = ("package.path = %q; package.cpath = %q; "):format(
          package.path, package.cpath)
        local h = util.spawn_lua(prelude .. ex.code)
        -- a bound that catches a hang, not a slow machine: these run in
        -- well under a second when idle
        local code = util.wait_exit(h, 120)
        local stacks = code == nil and util.stacks(h)
        local got = output_lines(util.read(h.out) or "")
        local err = util.read(h.err) or ""
        util.cleanup(h)
        assert.are.equal(0, code, code == nil and
          "still running after 120 s; stderr:\n" .. err .. "\nstacks:\n" ..
          stacks or err)
        assert.are.same(ex.wanted, got)
      end)
    end
  end
end)

describe("the docs check itself", function()
  it("reads --> comments, output blocks, and fails on a wrong line", function()
    local path = util.tmpname()
    util.write(path, table.concat({
      "```lua", "print(1, 2)   --> 1  2", "print('x')", "--> x", "```", "",
      "```lua", "print('a')", "print('b')", "```", "", "```output", "a",
      "b", "```", "" }, "\n"))
    local exs = examples(path)
    os.remove(path)
    assert.are.equal(2, #exs)
    assert.are.same({ "1 2", "x" }, exs[1].wanted)
    assert.are.same({ "a", "b" }, exs[2].wanted)
    assert.are.same({ "1 2", "x" }, output_lines("1\t2\nx\n\n"))
    assert.are_not.same({ "1 2", "4" }, output_lines("1\t2\nnil\n"))
  end)
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
