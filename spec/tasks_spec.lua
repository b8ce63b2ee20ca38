-- Structured tasks (issue 13, item 4): a task's children are cancelled
-- with it and have ended before its cancellation completes; detached
-- tasks and children of a task that returned go on; aio.group waits for
-- all its tasks and cancels the rest on the first error.
local synchro = require "synchro"
local util = require "spec.helpers.util"

describe("structured tasks", function()
  local S
  setup(function() S = synchro.new({ name = "tasks-spec", slow = 0 }) end)
  teardown(function() S:close() end)

  local function run(fn, ...) return S:wrap(fn)(...) end
  local function live()
    -- the tasks alive on the loop, less the one that asks if it is one (a
    -- call that does not suspend runs without a task: the fast path)
    return run(function()
      local sched = require "synchro.sched"
      return sched.loop.nlive - (sched.current and 1 or 0)
    end)
  end

  -- The failing case of the issue: a child outlived its parent's cancel.
  it("cancels a cancelled call's children, before the call ends", function()
    local start = S:wrap(function()
      local aio = require "synchro.aio"
      child_log = {} -- luacheck: ignore
      aio.spawn(function()
        local ok, err = pcall(aio.sleep, 10)
        -- cleanup that awaits: the parent's cancellation waits for it
        aio.shield(function() aio.sleep(0.05) end)
        child_log[#child_log + 1] = "child: " .. tostring(err) -- luacheck: ignore
        assert(not ok)
      end)
      aio.sleep(10)
    end)
    local fut = start.future()
    assert.is_false(fut:wait(0.05))
    fut:cancel()
    local ok, err = pcall(fut.result, fut)
    assert.is_false(ok)
    assert.is_true(synchro.is_cancelled(err))
    -- the child's cleanup had finished when the call's result came
    local log = run(function() return child_log end) -- luacheck: ignore
    assert.are.same({ "child: ECANCELED: task cancelled" }, log)
    assert.are.equal(0, live())
  end)

  it("1,000 children of a cancelled task are all gone", function()
    local start = S:wrap(function()
      local aio = require "synchro.aio"
      cleaned = 0 -- luacheck: ignore
      for _ = 1, 1000 do
        aio.spawn(function()
          aio.finally(function() aio.sleep(10) end,
            function() cleaned = cleaned + 1 end) -- luacheck: ignore
        end)
      end
      aio.sleep(10)
    end)
    local fut = start.future()
    assert.is_false(fut:wait(0.1))
    assert.are.equal(1001, live())
    fut:cancel()
    assert.has_error(function() fut:result() end)
    assert.are.equal(1000, run(function() return cleaned end)) -- luacheck: ignore
    assert.are.equal(0, live())
  end)

  it("cancels grandchildren too, and Task:cancel cancels a subtree",
    function()
      local log = run(function()
        local aio = require "synchro.aio"
        local out = {}
        local mid = aio.spawn(function()
          aio.spawn(function()
            aio.finally(function() aio.sleep(10) end,
              function(e) out[#out + 1] = "grandchild " .. tostring(e) end)
          end)
          aio.finally(function() aio.sleep(10) end,
            function(e) out[#out + 1] = "child " .. tostring(e) end)
        end)
        aio.sleep(0.01)
        mid:cancel()
        assert(not pcall(mid.join, mid))
        out[#out + 1] = "joined"
        return out
      end)
      table.sort(log)
      assert.are.same({ "child ECANCELED: task cancelled",
        "grandchild ECANCELED: task cancelled", "joined" }, log)
    end)

  it("leaves a detached task running when its spawner is cancelled",
    function()
      local start = S:wrap(function()
        local aio = require "synchro.aio"
        detached_done = false -- luacheck: ignore
        aio.spawn_detached(function()
          aio.sleep(0.1)
          detached_done = true -- luacheck: ignore
        end)
        aio.sleep(10)
      end)
      local fut = start.future()
      assert.is_false(fut:wait(0.02))
      fut:cancel()
      assert.has_error(function() fut:result() end)
      local done = run(function()
        local aio = require "synchro.aio"
        for _ = 1, 100 do
          if detached_done then return true end -- luacheck: ignore
          aio.sleep(0.02)
        end
        return false
      end)
      assert.is_true(done)
    end)

  it("lets children outlive a parent that returns (as before)", function()
    local v = run(function()
      local aio = require "synchro.aio"
      local child
      local parent = aio.spawn(function()
        child = aio.spawn(function() aio.sleep(0.05) return "child" end)
        return "parent"
      end)
      assert(parent:join() == "parent")
      assert(not child:done())
      return child:join()
    end)
    assert.are.equal("child", v)
  end)

  it("hands the children of a returned parent to the grandparent",
    function()
      local log = run(function()
        local aio = require "synchro.aio"
        local out = {}
        local top = aio.spawn(function()
          aio.spawn(function()
            aio.spawn(function()
              aio.finally(function() aio.sleep(10) end,
                function(e) out[#out + 1] = tostring(e) end)
            end)
          end):join() -- the middle task returns at once
          aio.sleep(10)
        end)
        aio.sleep(0.02)
        top:cancel()
        pcall(top.join, top)
        return out
      end)
      assert.are.same({ "ECANCELED: task cancelled" }, log)
    end)

  it("works inside synchro.run", function()
    local out = {}
    local ok, err = pcall(synchro.run, function()
      local aio = synchro.aio
      local parent = aio.spawn(function()
        for i = 1, 3 do
          aio.spawn(function()
            aio.finally(function() aio.sleep(10) end,
              function() out[#out + 1] = i end)
          end)
        end
        aio.sleep(10)
      end)
      aio.sleep(0.02)
      parent:cancel()
      parent:join()
    end)
    assert.is_false(ok)
    assert.is_true(synchro.is_cancelled(err))
    table.sort(out)
    assert.are.same({ 1, 2, 3 }, out)
  end)

  describe("hostile", function()
    it("cancels a parent while it spawns children in a loop that never " ..
      "yields", function()
      local start = S:wrap(function()
        local aio = require "synchro.aio"
        spawned, cleaned = 0, 0 -- luacheck: ignore
        local function spawn_forever()
          while true do
            aio.spawn(function()
              aio.finally(function() aio.sleep(10) end,
                function() cleaned = cleaned + 1 end) -- luacheck: ignore
            end)
            spawned = spawned + 1 -- luacheck: ignore
            if spawned >= 200000 then aio.sleep(10) end -- luacheck: ignore
          end
        end
        if jit then jit.off(spawn_forever) end
        spawn_forever()
      end)
      local fut = start.future()
      util.sleep(0.1)
      fut:cancel()
      local ok, err = pcall(fut.result, fut)
      assert.is_false(ok)
      assert.is_true(synchro.is_cancelled(err))
      local spawned, cleaned = run(function()
        return spawned, cleaned -- luacheck: ignore
      end)
      assert.is_true(spawned > 0)
      -- every child that ran its body ran its cleanup; none is left (the
      -- cancellation may land between a spawn and its count: one more)
      assert.is_true(cleaned <= spawned + 1, cleaned .. " > " .. spawned)
      assert.are.equal(0, live())
    end)

    it("reaches a child that never yields when its parent is cancelled",
      function()
        local start = S:wrap(function()
          local aio = require "synchro.aio"
          spin_log = nil -- luacheck: ignore
          aio.spawn(function()
            local function spin()
              local x = 0
              while true do x = (x + 1) % 1000003 end
            end
            if jit then jit.off(spin) end
            local _, e = pcall(spin)
            spin_log = "cleaned: " .. tostring(e) -- luacheck: ignore
          end)
          aio.sleep(10)
        end)
        local fut = start.future()
        util.sleep(0.1)
        local t0 = util.now()
        fut:cancel()
        assert.has_error(function() fut:result() end)
        assert.is_true(util.now() - t0 < 5)
        assert.are.equal("cleaned: ECANCELED: task cancelled",
          run(function() return spin_log end)) -- luacheck: ignore
        assert.are.equal(0, live())
      end)

    it("does not let a spawned child keep a cancelled task forever: a " ..
      "child that swallows its cancellation still ends the parent when " ..
      "it returns", function()
      local start = S:wrap(function()
        local aio = require "synchro.aio"
        aio.spawn(function()
          pcall(aio.sleep, 10)
          return "swallowed"
        end)
        aio.sleep(10)
      end)
      local fut = start.future()
      assert.is_false(fut:wait(0.02))
      fut:cancel()
      assert.has_error(function() fut:result() end)
      assert.are.equal(0, live())
    end)

    it("cancels a chain of 2,000 nested children", function()
      local cleaned = run(function()
        local aio = require "synchro.aio"
        local count = 0
        local function nest(depth)
          if depth > 0 then aio.spawn(nest, depth - 1) end
          aio.finally(function() aio.sleep(10) end,
            function() count = count + 1 end)
        end
        local top = aio.spawn(nest, 1999)
        aio.sleep(0.1)
        top:cancel()
        pcall(top.join, top)
        return count
      end)
      assert.are.equal(2000, cleaned)
      assert.are.equal(0, live())
    end)

    it("S:close() cancels parents and children while they run", function()
      local S2 = synchro.new({ slow = 0 })
      local count = S2:wrap(function() return cleaned2 or 0 end) -- luacheck: ignore
      local fut = S2:wrap(function()
        local aio = require "synchro.aio"
        cleaned2 = 0 -- luacheck: ignore
        for _ = 1, 100 do
          aio.spawn(function()
            aio.finally(function() aio.sleep(10) end,
              function() cleaned2 = cleaned2 + 1 end) -- luacheck: ignore
          end)
        end
        aio.sleep(10)
      end).future()
      assert.is_false(fut:wait(0.05))
      assert.are.equal(0, count())
      local t0 = util.now()
      S2:close()
      assert.is_true(util.now() - t0 < 5)
      assert.is_true(fut:done())
    end)
  end)

  describe("aio.group", function()
    it("waits for every task and returns the body's results", function()
      local a, b, log = run(function()
        local aio = require "synchro.aio"
        local out = {}
        local x, y = aio.group(function(g, p)
          for i = 1, 3 do
            g:spawn(function(s)
              aio.sleep(s)
              out[#out + 1] = i
            end, 0.01 * (4 - i))
          end
          return p, "second"
        end, "first")
        return x, y, out
      end)
      assert.are.equal("first", a)
      assert.are.equal("second", b)
      assert.are.same({ 3, 2, 1 }, log)
    end)

    it("cancels the rest on the first error, after their cleanup", function()
      local err, log = run(function()
        local aio = require "synchro.aio"
        local out = {}
        local ok, e = pcall(aio.group, function(g)
          for i = 1, 5 do
            g:spawn(function()
              aio.finally(function() aio.sleep(10) end,
                function(why)
                  aio.sleep(0.01) -- cleanup that awaits (shielded)
                  out[#out + 1] = i .. " " .. tostring(why)
                end)
            end)
          end
          g:spawn(function() aio.sleep(0.02) error("boom", 0) end)
          aio.sleep(10) -- the body is cancelled too
        end)
        assert(not ok)
        return e, out
      end)
      assert.are.equal("boom", err)
      assert.are.equal(5, #log)
      for i = 1, 5 do
        assert.matches("^%d ECANCELED: task cancelled$", log[i])
      end
    end)

    it("raises one error when all its tasks fail at once", function()
      local err, n = run(function()
        local aio = require "synchro.aio"
        local failed = 0
        local ok, e = pcall(aio.group, function(g)
          for i = 1, 50 do
            g:spawn(function()
              failed = failed + 1
              error("fail " .. i, 0)
            end)
          end
        end)
        assert(not ok)
        return e, failed
      end)
      assert.are.equal("fail 1", err)
      assert.are.equal(50, n)
    end)

    it("raises the body's error after cancelling its tasks", function()
      local err, cleaned = run(function()
        local aio = require "synchro.aio"
        local c = 0
        local ok, e = pcall(aio.group, function(g)
          for _ = 1, 10 do
            g:spawn(function()
              aio.finally(function() aio.sleep(10) end,
                function() c = c + 1 end)
            end)
          end
          aio.sleep(0.01)
          error("body failed", 0)
        end)
        assert(not ok)
        return e, c
      end)
      assert.are.equal("body failed", err)
      assert.are.equal(10, cleaned)
    end)

    it("is cancelled with its task: every member ends first", function()
      local start = S:wrap(function()
        local aio = require "synchro.aio"
        group_cleaned = 0 -- luacheck: ignore
        aio.group(function(g)
          for _ = 1, 20 do
            g:spawn(function()
              aio.finally(function() aio.sleep(10) end,
                function() group_cleaned = group_cleaned + 1 end) -- luacheck: ignore
            end)
          end
        end)
      end)
      local fut = start.future()
      assert.is_false(fut:wait(0.05))
      fut:cancel()
      assert.has_error(function() fut:result() end)
      assert.are.equal(20, run(function() return group_cleaned end)) -- luacheck: ignore
      assert.are.equal(0, live())
    end)

    it("group:cancel() stops the members; a cancelled member is no error",
      function()
        local v = run(function()
          local aio = require "synchro.aio"
          return aio.group(function(g)
            for _ = 1, 5 do g:spawn(aio.sleep, 10) end
            aio.sleep(0.01)
            g:cancel()
            return "stopped"
          end)
        end)
        assert.are.equal("stopped", v)
      end)

    it("refuses bad arguments and spawns after its end", function()
      local e1, e2 = run(function()
        local aio = require "synchro.aio"
        local _, a = pcall(aio.group, 42)
        local kept
        aio.group(function(g) kept = g end)
        local _, b = pcall(kept.spawn, kept, function() end)
        return a, b
      end)
      assert.matches("bad argument #1 to 'group' (function expected, got " ..
        "number)", e1, 1, true)
      assert.matches("this group has ended", e2, 1, true)
      assert.has_error(function() synchro.aio.group(function() end) end)
    end)
  end)
end)
