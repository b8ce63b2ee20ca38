-- Faithful proxies: operators, length, equality, tostring, pairs and
-- calls reach the remote object; classes wrap without a module. Started
-- from the failing cases: `#p`, `p == q`, `tostring(p)`, `..`, `pairs(p)`
-- (which showed the internal key '\0synchro'), a callable object, and a
-- class that could only be wrapped through a module.
local synchro = require "synchro"
local util = require "spec.helpers.util"

describe("faithful proxies", function()
  local S, vec, plain
  -- defines the async module vec.impl on S's loop
  local function define(on)
    on:wrap(function()
      package.loaded["vec.impl"] = (function()
        local V = {}
        V.__index = V
        local function new(x, y) return setmetatable({ x = x, y = y }, V) end
        V.__add = function(a, b) return new(a.x + b.x, a.y + b.y) end
        V.__sub = function(a, b) return new(a.x - b.x, a.y - b.y) end
        V.__mul = function(a, k)
          if type(a) == "number" then a, k = k, a end
          return new(a.x * k, a.y * k)
        end
        V.__unm = function(a) return new(-a.x, -a.y) end
        -- (# on a table ignores __len on 5.1: norm2 is called directly)
        local function norm2(a) return a.x * a.x + a.y * a.y end
        V.__len = norm2
        V.__eq = function() return true end -- never reached through proxies
        V.__lt = function(a, b) return norm2(a) < norm2(b) end
        V.__le = function(a, b) return norm2(a) <= norm2(b) end
        V.__tostring = function(a) return ("(%g, %g)"):format(a.x, a.y) end
        V.__concat = function(a, b) return tostring(a) .. tostring(b) end
        V.__call = function(a, k) return a.x * k + a.y end
        V.norm2 = norm2
        return { new = new, plain = function()
          return setmetatable({ a = 1, b = "two" }, { __index = {
            method = function() return "m" end } })
        end }
      end)()
    end)()
  end

  setup(function()
    S = synchro.new({ name = "proxies" })
    define(S)
    local lib = S:wrap_module("vec.impl")
    vec, plain = lib.new, lib.plain
  end)
  teardown(function() S:close() end)

  it("forwards length, arithmetic, comparison, tostring, concat and call",
    function()
      local a, b = vec(1, 2), vec(3, 4)
      assert.are.equal(5, #a)
      assert.are.equal(25, #b)
      local c = a + b
      assert.is_true(synchro.is_proxy(c))
      assert.are.equal(4, c.x)
      assert.are.equal(6, c.y)
      assert.are.equal(-2, (a - b).x)
      assert.are.equal(6, (b * 2).x)
      assert.are.equal(6, (2 * b).x)
      assert.are.equal(-1, (-a).x)
      assert.is_true(a < b)
      assert.is_true(a <= b)
      assert.is_false(b < a)
      assert.are.equal("(1, 2)", tostring(a))
      assert.are.equal("(1, 2)(3, 4)", a .. b)
      assert.are.equal("v=(1, 2)", "v=" .. a)
      assert.are.equal(12, a(10))
      assert.are.equal(5, a:norm2())
    end)

  it("is equal to another proxy of the same object only", function()
    local a, b = vec(1, 2), vec(1, 2)
    assert.is_false(a == b) -- the remote __eq is not asked
    local same = S:wrap(function(x) return x end)
    assert.is_true(same(a) == a)
    assert.is_false(a == { x = 1, y = 2 })
    assert.is_false(a == 1)
    assert.are_not.equal(a, b)
  end)

  it("iterates the object's own keys, never internal ones", function()
    local p = plain()
    local keys = {}
    for k, v in synchro.pairs(p) do keys[#keys + 1] = k .. "=" .. v end
    table.sort(keys)
    assert.are.same({ "a=1", "b=two" }, keys)
    if not util.lua51 then -- pairs() honours __pairs from 5.2 on
      local again = {}
      for k in pairs(p) do again[#again + 1] = k end
      table.sort(again)
      assert.are.same({ "a", "b" }, again)
    else -- a proxy is a userdata there: pairs() refuses it, loudly
      assert.has_error(function() pairs(p) end)
    end
    local n = 0
    for k, v in synchro.pairs({ z = 1 }) do n = n + 1 assert(k == "z" and v == 1) end
    assert.are.equal(1, n)
    assert.are.equal("m", p.method()) -- fields through __index
    -- nothing of synchro's own is visible on the proxy itself
    if type(p) == "table" then assert.is_nil(next(p)) end
  end)

  it("uses the plain path where a yield is impossible, in async code",
    function()
      local a, b = vec(1, 2), vec(3, 4)
      local r = synchro.run(function()
        return { tostring(a), #a, (a + b).x, a < b, a .. "", a(1), a.x,
          a:norm2() }
      end)
      assert.are.same({ "(1, 2)", 5, 4, true, "(1, 2)", 3, 1, 5 }, r)
      -- the same from a task on another loop
      local S2 = synchro.new({ name = "proxies-2" })
      local f = S2:wrap(function(p, q)
        return tostring(p), #p, (p + q).y, p <= q, p .. q, p(2), p.y
      end)
      assert.are.same({ "(1, 2)", 5, 6, true, "(1, 2)(3, 4)", 4, 2 },
        { f(a, b) })
      S2:close()
    end)

  it("wraps a class without a module", function()
    local Counter = {}
    Counter.__index = Counter
    Counter.created = 0
    function Counter.new(n)
      Counter.created = Counter.created + 1 -- the copy's, on the loop
      return setmetatable({ n = n }, Counter)
    end
    function Counter:add(k)
      require("synchro.aio").sleep(0.001)
      self.n = self.n + k
      return self.n
    end
    function Counter.__tostring(c) return "Counter(" .. c.n .. ")" end
    local Remote = S:wrap_class(Counter)
    assert.is_true(synchro.is_proxy(Remote))
    local c = Remote.new(1)
    assert.is_true(synchro.is_proxy(c))
    assert.are.equal(3, c:add(2))
    assert.are.equal("Counter(3)", tostring(c))
    assert.are.equal(1, Remote.created) -- fields are read there
    assert.are.equal(0, Counter.created) -- it ran there, not here
    -- inheritance through metatables comes along, and S:wrap takes a class
    local Base = { hello = function() return "hello from base" end }
    Base.__index = Base
    local Derived = setmetatable({}, Base)
    Derived.__index = Derived
    function Derived.new() return setmetatable({}, Derived) end
    local D = S:wrap(Derived)
    assert.are.equal("hello from base", D.new().hello())
    assert.are.equal(Base, getmetatable(Derived)) -- ours is left as it was
    assert.has_error(function() S:wrap(Derived, { timeout = 1 }) end,
      "bad argument #2 to 'wrap' (no options for a class)")
    assert.has_error(function() S:wrap_class(42) end,
      "bad argument #1 to 'wrap_class' (table expected, got number)")
    local ok, err = pcall(S.wrap_class, S, { f = io.stdout })
    assert.is_false(ok)
    assert.matches("cannot send userdata", err, 1, true)
  end)

  it("gives a clear error for a released object or a closed synchronizer",
    function()
      local core = require "synchro.core"
      local S2 = synchro.new({ name = "short" })
      define(S2)
      local lib = S2:wrap_module("vec.impl")
      local a, p = lib.new(1, 2), lib.plain()
      -- the loop lets p's object go while p lives (a forged release)
      local id = tonumber(tostring(p):match("#(%d+)"))
      core.post(S2._ud, core.OP_RELEASE_OBJECT, id, 1000)
      local ok, err = pcall(function() return p.a end)
      assert.is_false(ok)
      assert.matches("the object behind this proxy was released", err, 1,
        true)
      S2:close()
      ok, err = pcall(function() return #a end)
      assert.is_false(ok)
      assert.matches("synchronizer 'short' is closed", err, 1, true)
      ok, err = pcall(tostring, a)
      assert.is_false(ok)
      assert.matches("synchronizer 'short' is closed", err, 1, true)
    end)
end)
