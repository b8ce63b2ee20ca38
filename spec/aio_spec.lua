-- synchro.aio inside the loop: sleep, now, spawn, gather, race, timeout,
-- shield.
local synchro = require "synchro"
local util = require "spec.helpers.util"

describe("synchro.aio on the loop", function()
  local S
  setup(function() S = synchro.new({ name = "aio-spec" }) end)
  teardown(function() S:close() end)

  local function run(fn, ...) return S:wrap(fn)(...) end

  it("sleeps and measures time", function()
    local dt = run(function()
      local aio = require "synchro.aio"
      local t0 = aio.now()
      aio.sleep(0.05)
      return aio.now() - t0
    end)
    assert.is_true(dt >= 0.045 and dt < 1, "slept " .. dt)
  end)

  it("runs 10 concurrent sleeps in about the time of one", function()
    local dt, results = run(function()
      local aio = require "synchro.aio"
      local t0 = aio.now()
      local fns = {}
      for i = 1, 10 do
        fns[i] = function() aio.sleep(0.2) return i * i end
      end
      local r = { aio.gather((table.unpack or unpack)(fns)) }
      return aio.now() - t0, r
    end)
    assert.are.same({ 1, 4, 9, 16, 25, 36, 49, 64, 81, 100 }, results)
    assert.is_true(dt < 1, "took " .. dt)
  end)

  it("spawns tasks that can be joined, cancelled and checked", function()
    local a, b, done1, cancelled = run(function()
      local aio = require "synchro.aio"
      local t1 = aio.spawn(function(x) aio.sleep(0.01) return x + 1 end, 1)
      local t2 = aio.spawn(function() aio.sleep(10) end)
      local r1 = t1:join()
      t2:cancel()
      local ok, err = pcall(t2.join, t2)
      return r1, ok, t1:done(), aio.is_cancelled(err)
    end)
    assert.are.equal(2, a)
    assert.is_false(b)
    assert.is_true(done1)
    assert.is_true(cancelled)
  end)

  it("races and cancels the losers", function()
    local winner, loser_cleaned = run(function()
      local aio = require "synchro.aio"
      local cleaned = false
      local w = aio.race(function()
        local ok = pcall(aio.sleep, 10)
        cleaned = not ok
        return "slow"
      end, function() aio.sleep(0.01) return "fast" end)
      return w, cleaned
    end)
    assert.are.equal("fast", winner)
    assert.is_true(loser_cleaned)
  end)

  it("times out with nil, ETIMEDOUT after the child's cleanup", function()
    local v, msg, code, cleaned, fast = run(function()
      local aio = require "synchro.aio"
      local cleaned = false
      local a, b, c = aio.timeout(0.05, function()
        local ok = pcall(aio.sleep, 10)
        cleaned = not ok
      end)
      local fast = aio.timeout(1, function(x) return x end, "quick")
      return a, b, c, cleaned, fast
    end)
    assert.is_nil(v)
    assert.matches("^ETIMEDOUT", msg)
    assert.are.equal("ETIMEDOUT", code)
    assert.is_true(cleaned)
    assert.are.equal("quick", fast)
  end)

  it("passes errors out of timeout() and gather()", function()
    local ok, err = pcall(run, function()
      local aio = require "synchro.aio"
      return aio.timeout(1, function() error("inner", 0) end)
    end)
    assert.is_false(ok)
    assert.matches("^inner", err)
  end)

  it("shields cleanup that awaits from a cancellation", function()
    local steps = S:wrap(function() return shield_steps end) -- luacheck: ignore
    local work = S:wrap(function()
      local aio = require "synchro.aio"
      shield_steps = {} -- luacheck: ignore
      local _, err = pcall(aio.sleep, 10)
      table.insert(shield_steps, "cancelled") -- luacheck: ignore
      aio.shield(function()
        aio.sleep(0.05) -- awaiting here works despite the cancel
        table.insert(shield_steps, "shielded sleep done") -- luacheck: ignore
      end)
      -- level-triggered: the next wait outside the shield raises again
      local ok2 = pcall(aio.sleep, 1)
      table.insert(shield_steps, ok2 and "slept" or "raised again") -- luacheck: ignore
      error(err, 0)
    end)
    local f = work.future()
    f:wait(0.05)
    f:cancel()
    local t0 = util.now()
    assert.has_error(function() f:result() end)
    assert.is_true(util.now() - t0 < 2)
    assert.are.same({ "cancelled", "shielded sleep done", "raised again" },
      steps())
  end)

  it("lets a bare coroutine.yield() in a task give way to others", function()
    local order = run(function()
      local aio = require "synchro.aio"
      local log = {}
      local t = aio.spawn(function() log[#log + 1] = "other" end)
      coroutine.yield()
      log[#log + 1] = "me"
      t:join()
      return table.concat(log, ",")
    end)
    assert.are.equal("other,me", order)
  end)

  it("rejects bad arguments with the argument's name", function()
    local ok, err = pcall(run, function()
      return require("synchro.aio").gather(42)
    end)
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'gather'", err, 1, true)
    ok, err = pcall(run, function()
      return require("synchro.aio").timeout("x", print)
    end)
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'timeout'", err, 1, true)
    ok, err = pcall(run, function() return require("synchro.aio").spawn() end)
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'spawn'", err, 1, true)
  end)

  it("errors when an aio function runs in a non-task coroutine", function()
    local ok2, e = run(function()
      local co = coroutine.create(function()
        require("synchro.aio").sleep(0.01)
      end)
      return coroutine.resume(co)
    end)
    assert.is_false(ok2)
    assert.matches("not a task", e, 1, true)
  end)

  it("yields through pcall inside tasks on every Lua", function()
    local r = run(function()
      local aio = require "synchro.aio"
      local ok, v = pcall(function()
        aio.sleep(0.01)
        return "through"
      end)
      local ok2, v2 = xpcall(function() aio.sleep(0.01) error("x", 0) end,
        function(e) return "handled " .. e end)
      return ok and v .. "," .. tostring(ok2) .. "," .. v2
    end)
    assert.are.equal("through,false,handled x", r)
  end)

  it("pcall of a C function inside a task (regression: PUC 5.1's " ..
    "yield-safe pcall refused pcall(require, name))", function()
      local r = run(function()
        local ok, mod = pcall(require, "string")
        local ok2, err = pcall(require, "no.such.module")
        local ok3 = pcall(42)
        return ok and mod == string and not ok2 and
          tostring(err):find("no.such.module", 1, true) ~= nil and not ok3
      end)
      assert.is_true(r)
    end)
end)
