-- Futures, synchro.run, gather and race on the calling thread.
local synchro = require "synchro"
local now = require("synchro.core").now

describe("futures", function()
  local S, slow, fail
  setup(function()
    S = synchro.new({ name = "future-spec" })
    slow = S:wrap(function(seconds, value)
      require("synchro.aio").sleep(seconds)
      return value
    end)
    fail = S:wrap(function(msg)
      require("synchro.aio").sleep(0.01)
      error(msg, 0)
    end)
  end)
  teardown(function() S:close() end)

  it("runs concurrently and gives results", function()
    local t0 = now()
    local futs = {}
    for i = 1, 10 do futs[i] = slow.future(0.2, i) end
    for i = 1, 10 do assert.are.equal(i, futs[i]:result()) end
    local elapsed = now() - t0
    assert.is_true(elapsed < 1.5, "took " .. elapsed)
  end)

  it("reports done() and wait()", function()
    local f = slow.future(0.1, "x")
    assert.is_false(f:done())
    assert.is_false(f:wait(0.01))
    assert.is_true(f:wait())
    assert.is_true(f:done())
    assert.are.equal("x", f:result())
    assert.are.equal("x", f:result()) -- again
  end)

  it("times out result() with nil, ETIMEDOUT and keeps the call", function()
    local f = slow.future(0.3, "late")
    local v, msg, code = f:result(0.05)
    assert.is_nil(v)
    assert.matches("^ETIMEDOUT", msg)
    assert.are.equal("ETIMEDOUT", code)
    assert.are.equal("late", f:result())
  end)

  it("raises the remote error from result()", function()
    local f = fail.future("nope")
    local ok, err = pcall(f.result, f)
    assert.is_false(ok)
    assert.matches("^nope", err)
  end)

  it("cancels: the task's cleanup runs first, result() raises", function()
    local cleaned = S:wrap(function() return future_cleanup end) -- luacheck: ignore
    local work = S:wrap(function()
      local ok, err = pcall(require("synchro.aio").sleep, 10)
      future_cleanup = (not ok) and tostring(err) -- luacheck: ignore
      error(err, 0)
    end)
    local f = work.future()
    require("synchro.core").now()
    local t0 = now()
    assert.is_false(f:wait(0.05))
    assert.is_true(f:cancel())
    local ok, err = pcall(f.result, f)
    assert.is_true(now() - t0 < 2)
    assert.is_false(ok)
    assert.matches("ECANCELED", err, 1, true)
    assert.is_true(synchro.is_cancelled(err))
    assert.matches("ECANCELED", cleaned(), 1, true)
    assert.is_false(f:cancel()) -- already done
  end)

  it("rejects a bad timeout", function()
    local f = slow.future(0, 1)
    assert.has_error(function() f:result("soon") end)
    f:result()
  end)
end)

describe("synchro.run", function()
  local S, slow, fail
  setup(function()
    S = synchro.new({ name = "run-spec" })
    slow = S:wrap(function(seconds, value)
      require("synchro.aio").sleep(seconds)
      return value
    end)
    fail = S:wrap(function(seconds, msg)
      require("synchro.aio").sleep(seconds)
      error(msg, 0)
    end)
  end)
  teardown(function() S:close() end)

  it("returns main's results", function()
    assert.are.same({ 1, 2 }, { synchro.run(function(a) return a, 2 end, 1) })
  end)

  it("awaits .aio calls, and plain calls await too", function()
    local a, b = synchro.run(function()
      return slow.aio(0.01, "a"), slow(0.01, "b")
    end)
    assert.are.equal("a", a)
    assert.are.equal("b", b)
  end)

  it("gathers concurrently, in order", function()
    local t0 = now()
    local r = { synchro.run(function()
      return synchro.gather(
        function() return slow.aio(0.2, 1) end,
        slow.future(0.2, 2),
        synchro.spawn(function() return slow.aio(0.1, 3) end))
    end) }
    assert.are.same({ 1, 2, 3 }, r)
    assert.is_true(now() - t0 < 1, "gather ran sequentially")
  end)

  it("gather raises the first error and cancels the rest", function()
    local t0 = now()
    local ok, err = pcall(synchro.run, function()
      return synchro.gather(
        function() return slow.aio(5, "slow") end,
        function() return fail.aio(0.05, "first") end)
    end)
    assert.is_false(ok)
    assert.matches("^first", err)
    assert.is_true(now() - t0 < 2)
  end)

  it("race returns the first to finish", function()
    local t0 = now()
    local winner = synchro.run(function()
      return synchro.race(
        function() return slow.aio(5, "slow") end,
        function() return slow.aio(0.05, "fast") end)
    end)
    assert.are.equal("fast", winner)
    assert.is_true(now() - t0 < 2)
  end)

  it("awaits a future's result() inside async code", function()
    local f = slow.future(0.05, "fut")
    assert.are.equal("fut", synchro.run(function() return f:result() end))
  end)

  it("sleeps with aio.sleep on the calling thread", function()
    local aio = synchro.aio
    local t0 = now()
    synchro.run(function()
      aio.gather(function() aio.sleep(0.1) end, function() aio.sleep(0.1) end)
    end)
    local dt = now() - t0
    assert.is_true(dt >= 0.09 and dt < 1, "slept " .. dt)
  end)

  it("propagates main's error", function()
    assert.has_error(function()
      synchro.run(function() error({ code = 1 }) end)
    end)
  end)

  it("cannot be nested", function()
    local ok, err = pcall(synchro.run, function()
      return synchro.run(function() end)
    end)
    assert.is_false(ok)
    assert.matches("cannot be nested", err, 1, true)
  end)

  it("detects a task waiting on nothing", function()
    local ok, err = pcall(synchro.run, function()
      local me = synchro.aio.current()
      me:join()
    end)
    assert.is_false(ok)
    assert.is_string(err)
  end)
end)
