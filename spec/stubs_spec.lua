-- synchro-stubs: the stubs of examples/redis and of a fixture with every
-- kind (function, generator, plain function, fields, nested module, class
-- with methods and a generator method) equal their golden files; the
-- output is valid Lua that luacheck accepts; what the stubs declare is what
-- the wrapped module has at run time; the script and `lua -l` both work.
-- After a deliberate change, regenerate the goldens with
--   lua -l synchro.stubs kinds -o spec/fixtures/stubs/kinds.expected.lua
-- (package.path as below) and read the diff.
local synchro = require "synchro"
local stubs = require "synchro.stubs"
local util = require "spec.helpers.util"

local paths = "spec/fixtures/stubs/?.lua;spec/fixtures/stubs/?/init.lua;" ..
  "examples/redis/?.lua;examples/redis/?/init.lua;"
local golden = {
  kinds = "spec/fixtures/stubs/kinds.expected.lua",
  redis_async = "spec/fixtures/stubs/redis_async.expected.lua",
}

local function with_path(fn)
  local saved = package.path
  package.path = paths .. saved
  local ok, a, b = pcall(fn)
  package.path = saved
  if not ok then error(a, 0) end
  return a, b
end

local function run(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return rc, out:gsub("rc=%d+%s*$", "")
end

describe("synchro-stubs", function()
  for name, path in pairs(golden) do
    it(name .. " stubs equal the golden file", function()
      local text = assert(with_path(function() return stubs.generate(name) end))
      assert.are.equal(util.read(path), text)
    end)

    it(name .. " stubs are valid Lua that luacheck accepts", function()
      local text = util.read(path)
      assert.is_truthy((loadstring or load)(text))
      local rc, out = run("luacheck -q " .. path)
      assert.are.equal(0, rc, out)
    end)
  end

  it("declares what the wrapped module has at run time", function()
    local kinds = with_path(function() return require "kinds" end)
    local text = util.read(golden.kinds)
    -- wrapped functions: blocking, .aio, .future, .sync
    for fname in text:gmatch("\nM%.([%w_]+) = M_") do
      local f = kinds[fname]
      assert.is_true(synchro.is_proxy(f), fname)
      if text:find("---@class kinds." .. fname .. ".Iterator", 1, true) or
        text:find("---@class kinds." .. fname .. "\n---@overload fun%b(): kinds%." ..
          fname .. "%.Iterator") then
        assert.is_function(f.aio, fname)
      else
        for _, m in ipairs { "aio", "future", "sync" } do
          assert.is_function(f[m], fname .. "." .. m)
        end
      end
    end
    assert.are.equal(5, kinds.add(2, 3))
    assert.are.equal(5, kinds.add.future(2, 3):result())
    assert.are.same({ nil, "EINVAL: empty key", "EINVAL" },
      { kinds.lookup("") })
    assert.are.equal("xx", kinds.text.rep("x", 2))
    assert.are.equal(6, kinds.double(3)) -- plain: declared as a function
    assert.is_function(kinds.double)
    assert.are.equal("1.0", kinds.version)
    assert.are.equal(3, kinds.retries)
    local got = {}
    for i, sq in kinds.count(3) do got[#got + 1] = i .. ":" .. sq end
    assert.are.same({ "1:1", "2:4", "3:9" }, got)
    local c = kinds.counter(2)
    assert.are.equal(3, c:incr())
    assert.are.equal(4, c.incr.future(c):result())
    local down = {}
    for v in c:down() do down[#down + 1] = v end
    assert.are.same({ 4, 3, 2, 1 }, down)
    -- every method the class declares is a method of the proxy
    for m in text:gmatch("\nCounter%.([%w_]+) = Counter_") do
      assert.is_truthy(c[m], m)
      assert.is_function(c[m].aio, m)
    end
    c:close()
  end)

  local function lua_cmd()
    return ("LUA_PATH=%q %s"):format(paths .. package.path, util.interpreter())
  end

  it("runs as `lua -l synchro.stubs MODULE -o FILE`", function()
    local out = util.tmpname()
    local rc, msg = run(lua_cmd() .. " -l synchro.stubs kinds -o " .. out)
    assert.are.equal(0, rc, msg)
    assert.are.equal(util.read(golden.kinds), util.read(out))
    os.remove(out)
  end)

  it("runs as the synchro-stubs script, to stdout", function()
    local rc, out = run(lua_cmd() .. " bin/synchro-stubs redis_async")
    assert.are.equal(0, rc, out)
    assert.are.equal(util.read(golden.redis_async), out)
  end)

  it("says what is wrong: a missing module, a module that wraps nothing",
    function()
      local rc, out = run(lua_cmd() .. " bin/synchro-stubs no_such_module")
      assert.are.equal(1, rc)
      assert.matches("module 'no_such_module' not found", out)
      rc, out = run(lua_cmd() .. " bin/synchro-stubs kinds.impl")
      assert.are.equal(1, rc)
      assert.matches("does not call wrap_module", out)
      rc, out = run(lua_cmd() .. " bin/synchro-stubs")
      assert.are.equal(2, rc)
      assert.matches("usage: synchro%-stubs", out)
      assert.has_error(function() stubs.generate(42) end,
        "bad argument #1 to 'generate' (string expected, got number)")
    end)
end)
