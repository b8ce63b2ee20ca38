-- S:wrap: blocking calls, values crossing, errors, misuse.
local synchro = require "synchro"
local util = require "spec.helpers.util"

describe("S:wrap", function()
  local S
  setup(function() S = synchro.new({ name = "wrap-spec" }) end)
  teardown(function() S:close() end)

  it("calls an async function as a blocking call and returns its results",
    function()
      local add = S:wrap(function(a, b)
        local aio = require "synchro.aio"
        aio.sleep(0.01)
        return a + b, "sum"
      end)
      local sum, label = add(2, 3)
      assert.are.equal(5, sum)
      assert.are.equal("sum", label)
    end)

  it("runs on the loop thread, in another Lua VM", function()
    local probe = S:wrap(function()
      return require("synchro.core").loop_identity() ~= nil, tostring(_G)
    end)
    local on_loop, their_g = probe()
    assert.is_true(on_loop)
    assert.are_not.equal(tostring(_G), their_g)
    assert.is_nil(require("synchro.core").loop_identity())
  end)

  it("gives the loop VM the creator's package.path and cpath", function()
    local paths = S:wrap(function() return package.path, package.cpath end)
    local path, cpath = paths()
    assert.are.equal(package.path, path)
    assert.are.equal(package.cpath, cpath)
  end)

  it("blocks every signal on the loop thread", function()
    local mask = S:wrap(function()
      local f = io.open("/proc/thread-self/status")
      if not f then return nil end
      local text = f:read("*a")
      f:close()
      return text:match("SigBlk:%s*(%x+)")
    end)
    local hex = mask()
    if hex == nil then
      pending("no /proc/thread-self here")
      return
    end
    local function blocked(sig) -- bit sig-1 of the mask
      local at = #hex - math.floor((sig - 1) / 4)
      local digit = tonumber(hex:sub(at, at), 16)
      return math.floor(digit / 2 ^ ((sig - 1) % 4)) % 2 == 1
    end
    for _, sig in ipairs({ 1, 2, 3, 13, 14, 15, 17, 28 }) do
      assert.is_true(blocked(sig), "signal " .. sig .. " not blocked")
    end
  end)

  it("keeps nil, booleans, and trailing nils", function()
    local echo = S:wrap(function(...) return select("#", ...), ... end)
    local n, a, b, c, d = echo(nil, true, false, nil)
    assert.are.equal(4, n)
    assert.is_nil(a)
    assert.is_true(b)
    assert.is_false(c)
    assert.is_nil(d)
    assert.are.equal(0, (echo()))
  end)

  it("keeps numbers exactly, integers and floats apart", function()
    local echo = S:wrap(function(...) return ... end)
    local zero = 0.0
    local i, f, nan, inf, ninf, nz = echo(42, 42.0, 0 / 0, math.huge,
      -math.huge, -zero) -- (a -0.0 literal folds into 0.0 on Lua 5.1)
    assert.are.equal(42, i)
    if util.integers then
      assert.are.equal("integer", math.type(i))
      assert.are.equal("float", math.type(f))
      local maxi, mini = echo(math.maxinteger, math.mininteger)
      assert.are.equal(math.maxinteger, maxi)
      assert.are.equal(math.mininteger, mini)
    end
    assert.is_true(nan ~= nan)
    assert.are.equal(math.huge, inf)
    assert.are.equal(-math.huge, ninf)
    assert.are.equal(-math.huge, 1 / nz)
  end)

  it("keeps strings with zeros and large strings", function()
    local echo = S:wrap(function(s) return s, #s end)
    local s, n = echo("a\0b\0")
    assert.are.equal("a\0b\0", s)
    assert.are.equal(4, n)
    local big = string.rep("0123456789abcdef", 65536 * 4) -- 4 MiB
    local back, len = echo(big)
    assert.are.equal(#big, len)
    assert.is_true(back == big)
  end)

  it("copies nested tables, keeping shared references and cycles",
    function()
      local check = S:wrap(function(t)
        return t.a == t.b, t.self == t, t.list[3].x, #t.list, t
      end)
      local shared = { x = 1 }
      local t = { a = shared, b = shared, list = { 1, 2, { x = "deep" } } }
      t.self = t
      local same, cyc, deep, n, back = check(t)
      assert.is_true(same)
      assert.is_true(cyc)
      assert.are.equal("deep", deep)
      assert.are.equal(3, n)
      assert.are_not.equal(t, back)
      assert.are.equal(back, back.self)
      assert.are.equal(back.a, back.b)
    end)

  it("copies tables of every shape exactly: holes, items kept in the " ..
    "hash part, odd keys beside the items", function()
    local echo = S:wrap(function(t) return t end)
    local function same(a, b)
      if type(a) ~= "table" then return a == b end
      if type(b) ~= "table" then return false end
      for k, v in pairs(a) do if not same(v, b[k]) then return false end end
      for k in pairs(b) do if a[k] == nil then return false end end
      return true
    end
    local backwards = {}
    for i = 20, 1, -1 do backwards[i] = i * 2 end -- items in the hash part
    local holed = {}
    for i = 1, 12 do holed[i] = i end
    holed[5], holed[9] = nil, nil
    local odd = { 1, 2, 3 }
    odd[2.5], odd[-1], odd[0], odd[100], odd.k = "f", "n", "z", 100, "v"
    local mixed = {}
    for i = 1, 100 do mixed[i] = i end
    for i = 1, 50 do mixed["k" .. i] = i end
    for i = 101, 120 do mixed[i * 3] = i end
    local shuffled = {}
    shuffled[3], shuffled[1], shuffled.x, shuffled[2] = 3, 1, "x", 2
    local bad_item = { 1, 2, { 3, coroutine.create(function() end) } }
    for _, t in ipairs({ backwards, holed, odd, mixed, shuffled, {},
      { 1, nil, 3 }, { n = 1, { 1 }, { 2, { 3 } } } }) do
      assert.is_true(same(t, echo(t)))
    end
    local ok, err = pcall(echo, bad_item)
    assert.is_false(ok)
    assert.matches("args%[1%]%[3%]%[2%]: cannot send thread", err)
    local late = { 1, 2, x = coroutine.create(function() end) }
    ok, err = pcall(echo, late)
    assert.is_false(ok)
    assert.matches("args%[1%]%.x: cannot send thread", err)
  end)

  it("copies upvalues, recursive local functions and module tables",
    function()
      local factor = 3
      local config = { offset = 10 }
      local function fib(n)
        if n < 2 then return n end
        return fib(n - 1) + fib(n - 2)
      end
      local f = S:wrap(function(x)
        return x * factor + config.offset, fib(10), string.format("%03d", x),
          table.concat({ "a", "b" }, "-")
      end)
      local a, b, c, d = f(2)
      assert.are.equal(16, a)
      assert.are.equal(55, b)
      assert.are.equal("002", c)
      assert.are.equal("a-b", d)
    end)

  it("keeps upvalues shared between closures where Lua allows it",
    function()
      if util.puc51 then
        pending("Lua 5.1 has no lua_upvaluejoin")
        return
      end
      local count = 0
      local function incr() count = count + 1 end
      local function get() return count end
      local f = S:wrap(function()
        incr(); incr()
        return get()
      end)
      assert.are.equal(2, f())
    end)

  it("rebinds globals to the loop VM", function()
    local set = S:wrap(function(v) remote_value = v end) -- luacheck: ignore
    local get = S:wrap(function() return remote_value end) -- luacheck: ignore
    set(7)
    assert.are.equal(7, get())
    assert.is_nil(rawget(_G, "remote_value"))
  end)

  it("passes C functions by their path", function()
    local f = S:wrap(function(s) return string.upper(s), math.floor(2.5) end)
    local fmt = string.format
    local g = S:wrap(function() return fmt("%d-%s", 1, "x") end)
    assert.are.equal("ABC", (f("abc")))
    assert.are.equal("1-x", g())
  end)

  it("works many times, fast enough to call in a loop", function()
    local id = S:wrap(function(x) return x end)
    for i = 1, 20000 do
      if id(i) ~= i then error("wrong result at " .. i) end
    end
  end)

  it("calls a wrapped function in place when it is an upvalue", function()
    local helper = S:wrap(function(x)
      require("synchro.aio").sleep(0.001)
      return x * 10
    end)
    local main = S:wrap(function(a, b)
      return helper(a) + helper.aio(b), helper.future(1):result()
    end)
    local sum, one = main(1, 2)
    assert.are.equal(30, sum)
    assert.are.equal(10, one)
  end)

  it("has a readable tostring and the synchronizer field", function()
    local f = S:wrap(function() end, { name = "noop" })
    assert.matches("noop", tostring(f))
    assert.are.equal(S, f.synchronizer)
  end)
end)

describe("misuse", function()
  local S
  setup(function() S = synchro.new() end)
  teardown(function() S:close() end)

  it("rejects wrapping a non-function", function()
    assert.has_error(function() S:wrap(42) end,
      "bad argument #1 to 'wrap' (function expected, got number)")
    assert.has_error(function() S:wrap(function() end, 5) end,
      "bad argument #2 to 'wrap' (table expected, got number)")
    assert.has_error(function() S.wrap(nil, function() end) end)
  end)

  it("names the path of a value that cannot cross", function()
    local fetch = S:wrap(function(_, opts) return opts end)
    local ok, err = pcall(fetch, "url", { conn = io.stdout })
    assert.is_false(ok)
    assert.matches("bad argument #2 to '.-' %(args%[2%]%.conn: cannot send " ..
      "userdata%)", err)
    ok, err = pcall(fetch, 1, { list = { 1, 2, { co = coroutine.create(function() end) } } })
    assert.is_false(ok)
    assert.matches("args%[2%]%.list%[3%]%.co: cannot send thread", err)
    ok, err = pcall(fetch, setmetatable({}, {}))
    assert.is_false(ok)
    assert.matches("args%[1%]: cannot send table", err)
    -- (a function argument crosses as a callback: see callbacks_spec)
  end)

  it("names the argument a calling function was called as", function()
    local fetch = S:wrap(function() end)
    local ok, err = pcall(function() fetch(1, io.stderr) end)
    assert.is_false(ok)
    assert.matches("bad argument #2 to 'fetch'", err, 1, true)
  end)

  it("names an upvalue that cannot cross at wrap time", function()
    local conn = io.stdout
    local ok, err = pcall(S.wrap, S, function() return conn end)
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'wrap' %(fn.*conn.*: cannot send " ..
      "userdata%)", err)
  end)

  it("reports a result that cannot cross as an error", function()
    local f = S:wrap(function() return 1, coroutine.create(function() end) end)
    local ok, err = pcall(f)
    assert.is_false(ok)
    assert.matches("bad result #2 %(results%[2%]: cannot send thread%)", err)
  end)

  it("raises at the call site when the synchronizer is closed", function()
    local S2 = synchro.new({ name = "shut" })
    local f = S2:wrap(function() return 1 end)
    assert.are.equal(1, f())
    S2:close()
    assert.are.equal("closed", S2:state())
    local ok, err = pcall(f)
    assert.is_false(ok)
    assert.matches("ECLOSED: synchronizer 'shut' is closed", err, 1, true)
    -- at the caller's line, not inside synchro's Lua (a blocking call, a
    -- future, a generator's step)
    local here = debug.getinfo(1, "S").short_src
    local line = debug.getinfo(1, "l").currentline
    local _, e1 = pcall(function() local _ = f() end)
    local _, e2 = pcall(function() local _ = f.future() end)
    assert.are.equal(here .. ":" .. (line + 1) .. ": ECLOSED: synchronizer " ..
      "'shut' is closed", e1)
    assert.are.equal(here .. ":" .. (line + 2) .. ": ECLOSED: synchronizer " ..
      "'shut' is closed", e2)
    assert.has_error(function() S2:wrap(function() end) end)
    S2:close() -- twice is fine
  end)

  it("rejects bad options", function()
    assert.has_error(function() synchro.new(5) end)
    assert.has_error(function() synchro.new({ name = 5 }) end)
    assert.has_error(function() S:wrap(function() end, { timeout = "x" }) end)
    assert.has_error(function() synchro.run(5) end,
      "bad argument #1 to 'run' (function expected, got number)")
  end)

  it("says that .aio needs async code", function()
    local f = S:wrap(function() end)
    assert.has_error(function() f.aio() end)
    local ok, err = pcall(f.aio)
    assert.is_false(ok)
    assert.matches("'.aio' must be called from async code", err, 1, true)
  end)

  it("says that aio functions need a task", function()
    local aio = require "synchro.aio"
    local ok, err = pcall(aio.sleep, 0.1)
    assert.is_false(ok)
    assert.matches("must be called from async code", err, 1, true)
    assert.has_error(function() aio.sleep("x") end,
      "bad argument #1 to 'sleep' (number expected, got string)")
  end)
end)

describe("synchro.default", function()
  it("is one shared synchronizer", function()
    local a, b = synchro.default(), synchro.default()
    assert.are.equal(a, b)
    local f = a:wrap(function() return "ok" end)
    assert.are.equal("ok", f())
  end)
end)
