-- The loop's fast path (issue 15, item 1; src/vm/dispatch.c): a call that
-- returns without suspending runs on a pooled coroutine resumed from C,
-- and its Lua task is made only when the running code needs one. These
-- try what could tell the two paths apart, or break the hand-over from
-- one to the other.
local synchro = require "synchro"
local util = require "spec.helpers.util"
local unpack = table.unpack or unpack

describe("the loop's fast path", function()
  local S
  setup(function() S = synchro.new({ name = "fastpath", slow = 0 }) end)
  teardown(function() S:close() end)

  local function run(fn, ...) return S:wrap(fn)(...) end

  -- A call that never yields (kept out of LuaJIT's compiler, whose code
  -- runs no hooks); it gives up after 30 s, so that a cancellation that
  -- never comes fails the test instead of hanging the suite.
  local function never_yields()
    local function loop()
      local t0, x = os.clock(), 0
      while os.clock() - t0 < 30 do x = (x + 1) % 1000003 end
      return "never reached"
    end
    if jit then jit.off(loop) end
    return loop()
  end

  it("runs a call that does not suspend without making a task", function()
    local tasks, current = run(function()
      local sched = require "synchro.sched"
      return sched.loop.nlive, sched.current == nil
    end)
    assert.are.equal(0, tasks)
    assert.is_true(current)
  end)

  it("makes the task when the code asks for it, and replies the same",
    function()
      local aio = synchro.aio
      local has_task, same, n = run(function(...)
        local t = aio.current()
        return t ~= nil, t == aio.current(), select("#", ...)
      end, 1, nil, 3)
      assert.is_true(has_task)
      assert.is_true(same)
      assert.are.equal(3, n)
    end)

  it("hands a call that suspends to the scheduler, results intact", function()
    local r = { run(function(a, b)
      synchro.aio.sleep(0.01)
      return b, a, nil
    end, "x", { 1, 2 }) }
    assert.are.same({ { 1, 2 }, "x" }, r)
  end)

  it("takes a bare coroutine.yield() as letting others run", function()
    assert.are.equal("after", run(function()
      coroutine.yield()
      coroutine.yield(1, 2, 3)
      return "after"
    end))
  end)

  it("keeps coroutines the call makes its own", function()
    assert.are.equal(6, run(function()
      local gen = coroutine.wrap(function()
        for i = 1, 3 do coroutine.yield(i) end
      end)
      return gen() + gen() + gen()
    end))
  end)

  it("awaits inside pcall in the call (on 5.1 too)", function()
    local ok, v = run(function()
      return pcall(function()
        synchro.aio.sleep(0.001)
        return "slept"
      end)
    end)
    assert.is_true(ok)
    assert.are.equal("slept", v)
  end)

  it("raises a failing call's error with its remote traceback, and the " ..
     "next call still works", function()
      for _ = 1, 3 do
        local ok, err = pcall(run, function() error({ code = 7 }) end)
        assert.is_false(ok)
        assert.are.equal(7, err.code)
        local ok2, err2 = pcall(run, function() error("boom") end)
        assert.is_false(ok2)
        assert.matches("fastpath_spec%.lua:%d+: boom", err2)
        assert.matches("%[loop thread%] stack traceback", err2)
      end
      assert.are.equal(42, run(function(x) return x end, 42))
    end)

  it("carries thousands of arguments and results", function()
    local args = {}
    for i = 1, 7000 do args[i] = i end
    assert.are.equal(7000, run(function(...) return select("#", ...) end,
      unpack(args)))
    local r = { run(function(n)
      local t = {}
      for i = 1, n do t[i] = i end
      -- globals of the loop VM: the spec's own unpack is a C function
      -- that crosses by a path of this VM (table.unpack, where compat53
      -- set it on LuaJIT), which the loop VM may not have
      return (table.unpack or _G.unpack)(t) -- luacheck: ignore 143
    end, 5000) }
    assert.are.equal(5000, #r)
    assert.are.equal(5000, r[5000])
  end)

  -- state that stays on the loop: a global of its VM
  it("runs the tasks a call wakes after the call has replied", function()
    run(function()
      local aio = require "synchro.aio"
      fastpath_event, fastpath_log = aio.event(), {} -- luacheck: ignore
      aio.spawn(function()
        fastpath_event:wait() -- luacheck: ignore
        fastpath_log[#fastpath_log + 1] = "woken" -- luacheck: ignore
      end)
    end)
    local seen = run(function()
      fastpath_event:set() -- luacheck: ignore
      fastpath_log[#fastpath_log + 1] = "setter" -- luacheck: ignore
      return #fastpath_log -- luacheck: ignore
    end)
    assert.are.equal(1, seen)
    assert.is_true(util.wait_for(function()
      return run(function() return #fastpath_log end) == 2 -- luacheck: ignore
    end, 10))
    assert.are.same({ "setter", "woken" },
      run(function() return fastpath_log end)) -- luacheck: ignore
  end)

  it("lets a child spawned by a call that returns go on", function()
    run(function()
      local aio = require "synchro.aio"
      fastpath_done = false -- luacheck: ignore
      aio.spawn(function()
        aio.sleep(0.02)
        fastpath_done = true -- luacheck: ignore
      end)
    end)
    assert.is_true(util.wait_for(function()
      return run(function() return fastpath_done end) -- luacheck: ignore
    end, 10))
  end)

  it("reaches a call that never yields with its timeout, and the loop " ..
     "serves the next call", function()
      local spin = S:wrap(never_yields, { timeout = 0.2 })
      local now = require("synchro.core").now
      local t0 = now()
      local r, msg = spin()
      assert.is_nil(r)
      assert.matches("ETIMEDOUT", msg)
      assert.is_true(now() - t0 < 10)
      assert.are.equal("next", run(function() return "next" end))
    end)

  it("cancels a future of a call that never yields", function()
    local fut = S:wrap(never_yields).future()
    assert.is_false(fut:wait(0.05))
    fut:cancel()
    local ok, err = pcall(fut.result, fut)
    assert.is_false(ok)
    assert.is_true(synchro.is_cancelled(err))
    assert.are.equal(1, run(function() return 1 end))
  end)

  it("gives every one of many concurrent calls its own results, fast " ..
     "and suspending mixed", function()
      local f = S:wrap(function(i)
        if i % 3 == 0 then synchro.aio.sleep(0.001) end
        if i % 5 == 0 then coroutine.yield() end
        return i, -i
      end)
      local futs = {}
      for i = 1, 2000 do futs[i] = f.future(i) end
      for i = 1, 2000 do
        local a, b = futs[i]:result(30)
        assert.are.equal(i, a)
        assert.are.equal(-i, b)
      end
      local nlive = run(function()
        return require("synchro.sched").loop.nlive
      end)
      assert.are.equal(0, nlive)
    end)

  it("awaits another synchronizer from a call (its task made then)",
    function()
      local T = synchro.new({ name = "fastpath-other" })
      local inc = T:wrap(function(x) return x + 1 end)
      assert.are.equal(2, run(function(x) return inc(x) end, 1))
      T:close()
    end)

  describe("fut:spin and .aio from synchro.run", function()
    it("says whether the call is done, spinning a bounded time", function()
      local quick = S:wrap(function(x) return x end)
      local slow = S:wrap(function() synchro.aio.sleep(0.3) return "slow" end)
      local fut = quick.future(5)
      assert.is_true(util.wait_for(function() return fut:spin() end, 10))
      assert.are.equal(5, fut:result())
      local now = require("synchro.core").now
      local sf = slow.future()
      local t0 = now()
      assert.is_false(sf:spin())
      assert.is_true(now() - t0 < 0.25) -- a spin, not a wait
      assert.are.equal("slow", sf:result())
      assert.has_error(function() fut.spin({}) end)
    end)

    it("keeps awaits concurrent: a spin never holds up other tasks",
      function()
        local nap = S:wrap(function(x)
          synchro.aio.sleep(0.4)
          return x
        end)
        local echo = S:wrap(function(x) return x end)
        local now = require("synchro.core").now
        local t0 = now()
        local r = synchro.run(function()
          local aio = synchro.aio
          local ts = {}
          for i = 1, 4 do ts[i] = aio.spawn(function() return nap.aio(i) end) end
          -- quick awaits while the naps run
          local sum = 0
          for i = 1, 1000 do sum = sum + echo.aio(i) end
          local out = { sum }
          for i = 1, 4 do out[#out + 1] = ts[i]:join() end
          return out
        end)
        assert.are.same({ 500500, 1, 2, 3, 4 }, r)
        assert.is_true(now() - t0 < 1.5, "the naps ran one after another")
      end)
  end)
end)
