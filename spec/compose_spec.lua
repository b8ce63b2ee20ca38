-- Generators, iterators, wrapped functions and proxies cross like any
-- value: as arguments, results and upvalues, to the same or another
-- Synchronizer, and on to a third. Started from the failing cases:
-- `args[3]: cannot send table`, `fn[1][upvalue "g"]: cannot send table
-- with a metatable`, `a proxy of an unknown synchronizer`.
local synchro = require "synchro"
local util = require "spec.helpers.util"

describe("composing across synchronizers", function()
  local S1, S2, S3, count, log, live
  setup(function()
    package.path = "spec/fixtures/?.lua;" .. package.path
    S1 = synchro.new({ name = "one" })
    S2 = synchro.new({ name = "two" })
    S3 = synchro.new({ name = "three" })
    count = S1:wrap_generator(function(n)
      local aio = require "synchro.aio"
      gen_log = gen_log or {} -- luacheck: ignore
      local ok, err = pcall(function()
        for i = 1, n do
          aio.sleep(0.001)
          table.insert(gen_log, "produce " .. i) -- luacheck: ignore
          synchro.emit(i)
        end
      end)
      table.insert(gen_log, "cleanup") -- luacheck: ignore
      if not ok then error(err, 0) end
    end)
    log = S1:wrap(function()
      local l = gen_log or {} -- luacheck: ignore
      gen_log = {} -- luacheck: ignore
      return l
    end)
    live = S1:wrap(function()
      return require("synchro.runtime").gen_count()
    end)
  end)
  teardown(function()
    S1:close()
    S2:close()
    S3:close()
  end)
  before_each(function() log() end)

  -- sums what g(n) gives, one item at a time, noting each step
  local function summer(S)
    return S:wrap(function(g, n, steps)
      local sum, seen = 0, {}
      local it = g(n) -- stepped by hand: PUC 5.1 cannot yield in a for
      while true do
        local v = it()
        if v == nil then break end
        sum = sum + v
        seen[#seen + 1] = v
        if steps and #seen >= steps then it:close() break end
      end
      return sum, seen
    end)
  end

  it("passes a wrapped generator as an argument, on the same loop",
    function()
      local sum, seen = summer(S1)(count, 3)
      assert.are.equal(6, sum)
      assert.are.same({ 1, 2, 3 }, seen)
      assert.are.same({ "produce 1", "produce 2", "produce 3", "cleanup" },
        log())
    end)

  it("passes it to another synchronizer, where it iterates lazily",
    function()
      local lazy = S2:wrap(function(g)
        local it = g(10)
        local first = it()
        local got = log_of_one() -- luacheck: ignore
        local second = it()
        it:close()
        return first, second, got
      end)
      -- the loop of S2 reads S1's log between two steps
      local peek = S2:wrap(function(l) log_of_one = l end) -- luacheck: ignore
      peek(log)
      local first, second, got = lazy(count)
      assert.are.equal(1, first)
      assert.are.equal(2, second)
      assert.are.same({ "produce 1" }, got) -- nothing ran ahead
      assert.are.same({ "produce 2", "cleanup" }, log())
      assert.is_true(util.wait_for(function() return live() == 0 end, 5))
    end)

  it("crosses as an upvalue and as a result", function()
    local g = count
    local up = S2:wrap(function(n)
      local s, it = 0, g(n)
      for _ = 1, 1000 do
        local v = it()
        if v == nil then break end
        s = s + v
      end
      return s
    end)
    assert.are.equal(10, up(4))
    local back = S3:wrap(function(x) return x end)
    local again = back(count)
    assert.is_true(getmetatable(again) == getmetatable(count))
    local s = 0
    for v in again(3) do s = s + v end
    assert.are.equal(6, s)
  end)

  it("goes through three synchronizers in a chain", function()
    local third = S3:wrap(function(g, n)
      local s, it = 0, g(n)
      for _ = 1, 1000 do
        local v = it()
        if v == nil then break end
        s = s + v
      end
      return s
    end)
    local second = S2:wrap(function(g, n) return third(g, n) * 10 end)
    local first = S1:wrap(function(g, n) return second(g, n) + 1 end)
    assert.are.equal(151, first(count, 5))
    assert.are.equal("cleanup", log()[6])
    -- and a live iterator through the same chain: one item taken here
    local it = count(4)
    assert.are.equal(1, it())
    local rest3 = S3:wrap(function(i)
      local s = 0
      for _ = 1, 1000 do
        local v = i()
        if v == nil then break end
        s = s + v
      end
      return s
    end)
    local rest2 = S2:wrap(function(i) return rest3(i) end)
    assert.are.equal(2 + 3 + 4, rest2(it))
    assert.is_nil(it()) -- the same generator: ended here too
    assert.is_true(util.wait_for(function() return live() == 0 end, 5))
  end)

  it("keeps a crossed iterator alive while one copy holds it", function()
    local hold = S2:wrap(function(i) held = i end) -- luacheck: ignore
    local step = S2:wrap(function() return held() end) -- luacheck: ignore
    local drop = S2:wrap(function() held = nil collectgarbage() end) -- luacheck: ignore
    do
      local it = count(5)
      assert.are.equal(1, it())
      hold(it)
    end
    collectgarbage()
    collectgarbage()
    assert.are.equal(2, step()) -- our copy is gone, S2's still steps it
    drop()
    assert.is_true(util.wait_for(function() return live() == 0 end, 5),
      "the generator outlived every iterator: " .. live())
  end)

  it("forwards wrapped functions and proxies to a third synchronizer",
    function()
      local double = S1:wrap(function(x) return x * 2 end)
      local call3 = S3:wrap(function(f, x) return f(x) end)
      local via2 = S2:wrap(function(f, x) return call3(f, x) end)
      assert.are.equal(42, via2(double, 21))
      local lib = S1:wrap_module("objlib.impl")
      local c = lib.new(10)
      local incr3 = S3:wrap(function(obj, n) return obj:incr(n) end)
      local incr2 = S2:wrap(function(obj, n) return incr3(obj, n) end)
      assert.are.equal(15, incr2(c, 5))
      assert.are.equal(15, c.value)
      local triple3 = S3:wrap(function(f, x) return f(x) end)
      assert.are.equal(30, S2:wrap(function(f, x) return triple3(f, x) end)(
        lib.new, 0) and 30)
      -- a proxy that went round comes home as the object
      local same = S1:wrap(function(a, b) return rawequal(a, b) end)
      local round = S2:wrap(function(obj) return obj end)
      assert.is_true(same(c, round(c)))
    end)

  it("counts a forwarded proxy's references: the object lives until the last",
    function()
      local lib = S1:wrap_module("objlib.impl")
      collectgarbage()
      collectgarbage()
      util.wait_for(function() return false end, 0.1)
      local before = lib.live()
      local keep = S2:wrap(function(obj) kept = obj end) -- luacheck: ignore
      local use = S2:wrap(function() return kept:incr(1) end) -- luacheck: ignore
      local drop = S2:wrap(function() kept = nil collectgarbage() end) -- luacheck: ignore
      do
        keep(lib.new(1))
      end
      collectgarbage()
      collectgarbage()
      util.sleep(0.05)
      assert.are.equal(2, use()) -- alive: S2 holds it
      drop()
      assert.is_true(util.wait_for(function()
        collectgarbage()
        return lib.live() <= before
      end, 10), "objects left: " .. lib.live() .. " > " .. before)
    end)

  it("returns what is wrapped already from S:wrap", function()
    local f = S1:wrap(function(x) return x + 1 end)
    assert.are.equal(f, S1:wrap(f))
    assert.are.equal(f, S2:wrap(f))
    assert.are.equal(count, S2:wrap(count))
    assert.are.equal(count, S1:wrap_generator(count))
    local slow = S1:wrap(function() require("synchro.aio").sleep(5) end)
    local bounded = S1:wrap(slow, { timeout = 0.05 })
    assert.are_not.equal(slow, bounded)
    local r, msg, code = bounded()
    assert.is_nil(r)
    assert.are.equal("ETIMEDOUT", code, msg)
    local lib = S1:wrap_module("objlib.impl")
    assert.are.equal(lib.new, S1:wrap(lib.new))
    assert.has_error(function() S1:wrap(count, { timeout = 1 }) end,
      "bad argument #2 to 'wrap' (no options for a wrapped generator or a " ..
      "proxy)")
  end)

  it("bounds a generator's close by close_timeout", function()
    local stuck = S1:wrap_generator(function()
      local aio = require "synchro.aio"
      local ok = pcall(synchro.emit, 1)
      if not ok then aio.shield(aio.sleep, 3) end -- cleanup that hangs
    end, { close_timeout = 0.05 })
    local it = stuck()
    assert.are.equal(1, it())
    local t0 = util.now()
    it:close()
    assert.is_true(util.now() - t0 < 2.5, "close waited for the cleanup")
    -- negative is 0: close does not wait at all; math.huge: no limit
    local at_once = S1:wrap_generator(function()
      local aio = require "synchro.aio"
      local ok = pcall(synchro.emit, 1)
      if not ok then aio.shield(aio.sleep, 0.2) end
    end, { close_timeout = -1 })
    it = at_once()
    it()
    t0 = util.now()
    it:close()
    assert.is_true(util.now() - t0 < 2.5)
    local patient = S1:wrap_generator(function()
      local aio = require "synchro.aio"
      local ok = pcall(synchro.emit, 1)
      if not ok then aio.shield(aio.sleep, 0.2) end
      done_cleanup = true -- luacheck: ignore
    end, { close_timeout = math.huge })
    it = patient()
    it()
    it:close()
    assert.is_true(S1:wrap(function() return done_cleanup end)()) -- luacheck: ignore
    assert.has_error(function()
      S1:wrap_generator(function() end, { close_timeout = 0 / 0 })
    end, "bad argument #2 to 'wrap_generator' (close_timeout is NaN)")
    assert.has_error(function()
      S1:wrap_generator(function() end, { close_timout = 1 })
    end)
    assert.has_error(function()
      S1:wrap_generator(function() end, { close_timeout = "1" })
    end, "bad argument #2 to 'wrap_generator' (close_timeout: number " ..
      "expected, got string)")
  end)

  it("closes a generator twice, and from two loops at once", function()
    local it = count(10)
    assert.are.equal(1, it())
    it:close()
    it:close()
    assert.is_nil(it())
    local it2 = count(10)
    assert.are.equal(1, it2())
    local closer = function(i)
      require("synchro.aio").sleep(0.01)
      i:close()
      return i() == nil
    end
    local f2 = S2:wrap(closer).future(it2)
    local f3 = S3:wrap(closer).future(it2)
    assert.is_true(f2:result(30))
    assert.is_true(f3:result(30))
    assert.is_nil(it2())
    assert.are.same({ "produce 1", "cleanup", "produce 1", "cleanup" }, log())
    assert.is_true(util.wait_for(function() return live() == 0 end, 5))
  end)

  it("fails clearly when the generator's synchronizer closed meanwhile",
    function()
      local S4 = synchro.new({ name = "short-lived" })
      local g = S4:wrap_generator(function()
        for i = 1, 100 do synchro.emit(i) end
      end)
      local it = g()
      assert.are.equal(1, it())
      local keep = S2:wrap(function(gen, i) kept_g, kept_i = gen, i end) -- luacheck: ignore
      keep(g, it)
      S4:close()
      local ok, err = pcall(S2:wrap(function() return kept_i() end)) -- luacheck: ignore
      assert.is_false(ok)
      assert.matches("short-lived", tostring(err), 1, true)
      ok, err = pcall(S2:wrap(function() return kept_g()() end)) -- luacheck: ignore
      assert.is_false(ok)
      assert.matches("short-lived", tostring(err), 1, true)
      it:close() -- closing after the end is fine
    end)
end)
