-- The opposite direction, whole (issue 13, item 5): blocking code offloaded
-- to worker threads from every context (synchro.to_thread), a blocking
-- generator iterated from async code with back pressure
-- (aio.iter_in_thread), a blocking object or module offloaded whole
-- (S:offload, S:offload_module), and a running job interrupted by
-- cancellation, its cleanup run.
local synchro = require "synchro"
local util = require "spec.helpers.util"

-- A job that never yields and never returns, with cleanup after its pcall.
-- (Code LuaJIT compiled runs no hooks: the loop is kept out of the JIT
-- there, as docs/guide.md says.)
local function forever()
  local function spin() while true do end end
  if jit then jit.off(spin) end
  local ok, err = pcall(spin)
  return "cleaned: " .. tostring(ok) .. " " .. tostring(err)
end

-- A blocking generator: one item, then a job that never ends, whose
-- cleanup (after its pcall) writes to the file p what stopped it.
local function one_then_forever(p)
  coroutine.yield(1) -- (PUC 5.1 cannot yield inside a pcall)
  local ok, err = pcall(function()
    local function spin() while true do end end
    if jit then jit.off(spin) end
    spin()
  end)
  local f = io.open(p, "w")
  f:write("cleaned: " .. tostring(ok) .. " " .. tostring(err))
  f:close()
end

describe("synchro.to_thread", function()
  local S
  setup(function() S = synchro.new({ name = "to-thread-spec", slow = 0 }) end)
  teardown(function() S:close() end)

  local function run(fn, ...) return S:wrap(fn)(...) end

  -- The failing case of the issue: run_in_thread outside a loop's task.
  it("makes aio.run_in_thread work outside a loop's tasks", function()
    assert.are.equal(2, synchro.run(function()
      return synchro.aio.run_in_thread(function(x) return x + 1 end, 1)
    end))
    assert.are.equal(3, synchro.aio.run_in_thread(function() return 3 end))
  end)

  it("runs from plain code, blocking", function()
    local a, b = S:to_thread(function(x, y) return x + y, "two" end, 1, 2)
    assert.are.equal(3, a)
    assert.are.equal("two", b)
    -- the default synchronizer's
    assert.are.same({ 6, 7 }, { synchro.to_thread(function(t)
      return t[1] * 2, t[2] + 4
    end, { 3, 3 }) })
  end)

  it("awaits inside synchro.run without stalling it", function()
    local ticks, v = synchro.run(function()
      local aio = synchro.aio
      local n, stop = 0, false
      local ticker = aio.spawn(function()
        while not stop do
          n = n + 1
          aio.sleep(0.01)
        end
      end)
      local r = S:to_thread(function()
        local deadline = os.clock() + 0.5
        while os.clock() < deadline do end
        return "blocked 0.5 s"
      end)
      stop = true
      ticker:join()
      return n, r
    end)
    assert.are.equal("blocked 0.5 s", v)
    assert.is_true(ticks >= 5, "ticks: " .. ticks)
  end)

  it("awaits inside a synchro.luv coroutine without stalling the loop",
    function()
      local uv = require "luv"
      local sluv = require "synchro.luv"
      local ticks = 0
      local timer = uv.new_timer()
      timer:start(10, 10, function() ticks = ticks + 1 end)
      local task = sluv.run(function()
        local r = S:to_thread(function()
          local deadline = os.clock() + 0.5
          while os.clock() < deadline do end
          return "from luv"
        end)
        timer:stop()
        timer:close()
        return r
      end)
      uv.run()
      assert.are.equal("from luv", task:result())
      assert.is_true(ticks >= 5, "ticks: " .. ticks)
    end)

  it("is aio.run_in_thread inside a loop's task", function()
    assert.are.equal(9, run(function()
      return require("synchro").to_thread(function(x) return x * x end, 3)
    end))
  end)

  it("interrupts a running job when cancelled, after its cleanup",
    function()
      local job = forever
      local dt, r, msg, cleanup = run(function()
        local aio = require "synchro.aio"
        local t0 = aio.now()
        local out
        local a, b = aio.timeout(0.2, function()
          out = aio.run_in_thread(job)
        end)
        return aio.now() - t0, a, b, out
      end)
      assert.is_nil(r)
      assert.matches("^ETIMEDOUT", msg)
      assert.is_nil(cleanup) -- the task was cancelled: no result
      assert.is_true(dt < 2, "took " .. dt .. " s")
    end)

  it("runs the job's cleanup when interrupted (while true do end)",
    function()
      local marker = util.tmpname()
      local t0 = util.now()
      local ok, err = pcall(synchro.run, function()
        return synchro.aio.timeout(0.2, S.to_thread, S, function(path)
          local function spin() while true do end end
          if jit then jit.off(spin) end
          local _, e = pcall(spin)
          local f = io.open(path, "w")
          f:write("cleaned: " .. tostring(e))
          f:close()
        end, marker)
      end)
      local dt = util.now() - t0
      assert.is_true(ok, tostring(err))
      assert.is_true(dt < 2, "took " .. dt .. " s")
      assert.are.equal("cleaned: ECANCELED: the job was cancelled",
        util.read(marker))
      os.remove(marker)
    end)

  describe("hostile", function()
    it("raises the function's error with the worker's traceback", function()
      local ok, err = pcall(S.to_thread, S, function()
        error("thread boom")
      end)
      assert.is_false(ok)
      assert.matches("thread boom", err, 1, true)
      assert.matches("[worker thread] stack traceback", err, 1, true)
      local ok2, err2 = pcall(S.to_thread, S, function()
        error({ code = 42 })
      end)
      assert.is_false(ok2)
      assert.are.equal(42, err2.code)
    end)

    it("refuses results that cannot cross", function()
      local ok, err = pcall(S.to_thread, S, function()
        return 1, function() end
      end)
      assert.is_false(ok)
      assert.matches("bad result #2", err, 1, true)
      local ok2, err2 = pcall(S.to_thread, S, function() return io.stdout end)
      assert.is_false(ok2)
      assert.matches("bad result #1", err2, 1, true)
    end)

    it("refuses bad arguments", function()
      assert.has_error(function() synchro.to_thread(42) end,
        "bad argument #1 to 'to_thread' (function expected, got number)")
      assert.has_error(function() S:to_thread() end,
        "bad argument #1 to 'to_thread' (function expected, got nil)")
      local ok, err = pcall(S.to_thread, S, function() end, io.stdout)
      assert.is_false(ok)
      assert.matches("cannot send userdata", err, 1, true)
    end)

    it("drops a job cancelled before it starts", function()
      local S2 = synchro.new({ slow = 0 })
      local started, left = S2:wrap(function()
        local aio = require "synchro.aio"
        local thread = require "synchro.aio.thread"
        thread.configure({ workers = 1 })
        local busy = aio.spawn(aio.run_in_thread, function()
          local deadline = os.clock() + 0.5
          while os.clock() < deadline do end
        end)
        aio.sleep(0.02)
        local never = false
        local r, msg = aio.timeout(0.01, aio.run_in_thread, function()
          never = true -- a copy: the worker's own
          return "ran"
        end)
        assert(r == nil and msg:find("ETIMEDOUT"))
        local queued = thread.stats().queued
        busy:join()
        return never, queued
      end)()
      assert.is_false(started)
      assert.are.equal(0, left)
      S2:close()
    end)

    it("S:close() while jobs run interrupts them and does not hang",
      function()
        local S2 = synchro.new({ slow = 0 })
        local futs = {}
        local job = forever
        for i = 1, 3 do
          futs[i] = S2:wrap(function()
            return require("synchro.aio").run_in_thread(job)
          end).future()
        end
        assert.is_false(futs[1]:wait(0.1))
        local t0 = util.now()
        S2:close()
        assert.is_true(util.now() - t0 < 5)
        for i = 1, 3 do assert.is_true(futs[i]:done()) end
      end)
  end)
end)

describe("aio.iter_in_thread", function()
  local S
  setup(function() S = synchro.new({ name = "iter-spec", slow = 0 }) end)
  teardown(function() S:close() end)

  local function run(fn, ...) return S:wrap(fn)(...) end

  it("iterates 100k items of a blocking generator, with back pressure",
    function()
      local n, sum, in_order, most, waited = run(function()
        local aio = require "synchro.aio"
        local it = aio.iter_in_thread({ buffer = 16 }, function(count)
          for i = 1, count do coroutine.yield(i, -i) end
        end, 100000)
        local count, total, ordered, biggest = 0, 0, true, 0
        local paused = false
        while true do
          local v, w = it:next()
          if v == nil then break end
          count = count + 1
          total = total + v
          if v ~= count or w ~= -v then ordered = false end
          if it.count > biggest then biggest = it.count end
          if count == 10 and not paused then
            -- the producer could make all 100k items meanwhile, unbounded
            paused = true
            aio.sleep(0.2)
          end
        end
        return count, total, ordered, biggest, paused
      end)
      assert.are.equal(100000, n)
      assert.are.equal(100000 * 100001 / 2, sum)
      assert.is_true(in_order)
      assert.is_true(waited)
      assert.is_true(most <= 16, "a batch of " .. most .. " items")
    end)

  it("works in a for loop where Lua can yield there", function()
    if _VERSION == "Lua 5.1" and not jit then
      pending("5.1 cannot yield inside a for iterator: it:next() there")
      return
    end
    local r = run(function()
      local aio = require "synchro.aio"
      local out = {}
      for a, b in aio.iter_in_thread(function()
        coroutine.yield("x", 1)
        coroutine.yield("y", 2)
      end) do
        out[#out + 1] = a .. b
      end
      return table.concat(out, ",")
    end)
    assert.are.equal("x1,y2", r)
  end)

  it("raises the generator's error after the items before it", function()
    local items, err = run(function()
      local aio = require "synchro.aio"
      local it = aio.iter_in_thread(function()
        coroutine.yield(1)
        coroutine.yield(2)
        error("gen failed")
      end)
      local got = {}
      local ok, e = pcall(function()
        while true do
          local v = it:next()
          if v == nil then break end
          got[#got + 1] = v
        end
      end)
      assert(not ok)
      return got, e
    end)
    assert.are.same({ 1, 2 }, items)
    assert.matches("gen failed", err, 1, true)
    assert.matches("[worker thread] stack traceback", err, 1, true)
  end)

  it("stops early: close() interrupts the generator and waits for its " ..
    "cleanup", function()
      local marker = util.tmpname()
      local first = run(function(path)
        local aio = require "synchro.aio"
        local it = aio.iter_in_thread(one_then_forever, path)
        local v = it:next()
        it:close()
        assert(it:next() == nil)
        return v
      end, marker)
      assert.are.equal(1, first)
      assert.are.equal("cleaned: false ECANCELED: the job was cancelled",
        util.read(marker))
      os.remove(marker)
    end)

  it("a cancelled consumer stops the generator, after its cleanup",
    function()
      local marker = util.tmpname()
      local r, msg = run(function(path)
        local aio = require "synchro.aio"
        return aio.timeout(0.1, function()
          local it = aio.iter_in_thread({ buffer = 1 }, one_then_forever,
            path)
          while true do it:next() end
        end)
      end, marker)
      assert.is_nil(r)
      assert.matches("^ETIMEDOUT", msg)
      assert.are.equal("cleaned: false ECANCELED: the job was cancelled",
        util.read(marker))
      os.remove(marker)
    end)

  it("an iterator dropped unfinished stops its worker when collected",
    function()
      local busy = run(function()
        local aio = require "synchro.aio"
        local thread = require "synchro.aio.thread"
        local function start() -- its frame (and registers) gone after
          local it = aio.iter_in_thread({ buffer = 1 }, function()
            local i = 0
            while true do
              i = i + 1
              coroutine.yield(i)
            end
          end)
          assert(it:next() == 1)
        end
        start()
        aio.sleep(0.01) -- and no stale slot of this coroutine's stack
        for _ = 1, 3 do collectgarbage() end
        for _ = 1, 200 do
          if thread.stats().busy == 0 then return 0 end
          aio.sleep(0.01)
        end
        return thread.stats().busy
      end)
      assert.are.equal(0, busy)
    end)

  it("refuses bad arguments and items that cannot cross", function()
    local e1, e2, e3, e4 = run(function()
      local aio = require "synchro.aio"
      local _, a = pcall(aio.iter_in_thread, 42)
      local _, b = pcall(aio.iter_in_thread, { buffer = 0 }, function() end)
      local _, c = pcall(aio.iter_in_thread, { bufer = 3 }, function() end)
      local it = aio.iter_in_thread(function() coroutine.yield(print) end)
      local _, d = pcall(it.next, it)
      return a, b, c, d
    end)
    assert.matches("bad argument #1 to 'iter_in_thread' (function " ..
      "expected, got number)", e1, 1, true)
    assert.matches("buffer must be an integer", e2, 1, true)
    assert.matches("bufer", e3, 1, true)
    assert.matches("bad item value #1", e4, 1, true)
  end)
end)

describe("S:iter_in_thread and synchro.iter_in_thread", function()
  local S
  setup(function() S = synchro.new({ name = "iter-out-spec", slow = 0 }) end)
  teardown(function() S:close() end)

  -- The gap left by aio.iter_in_thread: a blocking generator iterated from
  -- plain code and from synchro.run, not only from a loop's task.
  it("iterates from plain code, blocking for each item", function()
    local count, total, ordered = 0, 0, true
    local it = S:iter_in_thread({ buffer = 8 }, function(n)
      for i = 1, n do coroutine.yield(i, -i) end
    end, 10000)
    while true do
      local v, w = it:next()
      if v == nil then break end
      count, total = count + 1, total + v
      if v ~= count or w ~= -v then ordered = false end
    end
    assert.are.equal(10000, count)
    assert.are.equal(10000 * 10001 / 2, total)
    assert.is_true(ordered)
    assert.is_nil(it:next()) -- ended stays ended
    -- the default synchronizer's, and aio.iter_in_thread outside a task
    local got = {}
    for v in synchro.iter_in_thread(function() coroutine.yield("a")
      coroutine.yield("b") end) do got[#got + 1] = v end
    for v in synchro.aio.iter_in_thread(function(x) coroutine.yield(x) end,
      "c") do got[#got + 1] = v end
    assert.are.same({ "a", "b", "c" }, got)
  end)

  it("awaits inside synchro.run without stalling it", function()
    local sum, ticks = synchro.run(function()
      local aio = synchro.aio
      local n = 0
      local ticker = aio.spawn(function()
        while true do n = n + 1 aio.sleep(0.005) end
      end)
      local it = S:iter_in_thread({ buffer = 2 }, function()
        local clock = os.clock
        for i = 1, 5 do
          local t = clock() + 0.02 -- blocking work on the worker
          while clock() < t do end
          coroutine.yield(i)
        end
      end)
      local s = 0
      while true do
        local v = it:next()
        if v == nil then break end
        s = s + v
      end
      ticker:cancel()
      return s, n
    end)
    assert.are.equal(15, sum)
    assert.is_true(ticks >= 3, "the scheduler ran " .. ticks .. " ticks")
  end)

  it("close() from plain code interrupts the generator after its cleanup",
    function()
      local marker = util.tmpname()
      local it = S:iter_in_thread(one_then_forever, marker)
      assert.are.equal(1, it:next())
      it:close()
      assert.is_nil(it:next())
      assert.are.equal("cleaned: false ECANCELED: the job was cancelled",
        util.read(marker))
      os.remove(marker)
    end)

  it("a break leaves the loop and closes it (5.4)", function()
    if _VERSION ~= "Lua 5.4" then
      pending("the to-be-closed 4th value of a for loop is Lua 5.4's")
      return
    end
    local marker = util.tmpname()
    local seen = 0
    for v in S:iter_in_thread(function(p)
      local ok = pcall(function() for i = 1, 1e9 do coroutine.yield(i) end end)
      local f = io.open(p, "w")
      f:write(tostring(ok))
      f:close()
    end, marker) do
      seen = v
      if v == 3 then break end
    end
    assert.are.equal(3, seen)
    -- PUC 5.4 cannot yield inside that pcall: the generator's pcall ends
    -- with the interrupt (false) or the yield's error; the file is there
    assert.are.equal("false", util.read(marker))
    os.remove(marker)
  end)

  it("raises the generator's error after its items", function()
    local it = S:iter_in_thread(function()
      coroutine.yield(1)
      error("gen failed")
    end)
    assert.are.equal(1, it:next())
    local ok, err = pcall(it.next, it)
    assert.is_false(ok)
    assert.matches("gen failed", err, 1, true)
    assert.matches("[worker thread] stack traceback", err, 1, true)
    assert.is_nil(it:next())
  end)

  it("refuses bad arguments at the caller's line, numbered as passed",
    function()
      local here = debug.getinfo(1, "S").short_src
      local function raised(f, ...)
        local ok, err = pcall(f, ...)
        assert.is_false(ok)
        return err
      end
      -- (each call on one line: Luas differ on a multi-line call's line)
      local line = debug.getinfo(1, "l").currentline
      local e1 = raised(function() local _ = S:iter_in_thread(42) end)
      assert.are.equal(here .. ":" .. (line + 1) .. ": bad argument #1 " ..
        "to 'iter_in_thread' (function expected, got number)", e1)
      assert.matches("bad argument #1 to 'iter_in_thread' (buffer must be " ..
        "an integer between 1 and 1000000)", raised(function()
          return S:iter_in_thread({ buffer = 0 / 0 }, function() end) end),
        1, true)
      assert.matches("unknown option 'size'", raised(function()
        return S:iter_in_thread({ size = 1 }, function() end) end), 1, true)
      assert.matches("bad argument #2 to 'iter_in_thread' (function " ..
        "expected, got nil)", raised(function()
          return synchro.iter_in_thread({ buffer = 2 }) end), 1, true)
      local f = function() end
      line = debug.getinfo(1, "l").currentline
      local e2 = raised(function() local _ = S:iter_in_thread({}, f, 1, io.stdout) end)
      assert.are.equal(here .. ":" .. (line + 1) .. ": bad argument #4 " ..
        "to 'iter_in_thread' (args[4]: cannot send userdata)", e2)
      assert.matches("bad argument #3 to 'iter_in_thread' (args[3]: ",
        raised(function() local _ = S:iter_in_thread(function() end, 1,
          io.stdout) end), 1, true)
    end)
end)

describe("misuse of synchro's wrappers is reported as the user wrote it",
  function()
    local S
    setup(function() S = synchro.new({ name = "argnum-spec", slow = 0 }) end)
    teardown(function() S:close() end)
    local here = debug.getinfo(1, "S").short_src

    -- (the functions passed do not tail-call: a tail call leaves no frame
    -- of the caller's to report)
    local function raised(f)
      local ok, err = pcall(f)
      assert.is_false(ok)
      return err
    end

    it("to_thread, offload and offloaded methods", function()
      local f, out = function() end, io.stdout
      local ctor = function() return {} end
      local line = debug.getinfo(1, "l").currentline
      local e1 = raised(function() local _ = S:to_thread(f, 1, out) end)
      local e2 = raised(function() local _ = synchro.to_thread(f, out) end)
      local e3 = raised(function() local _ = S:offload(ctor, 1, 2, out) end)
      assert.are.equal(here .. ":" .. (line + 1) .. ": bad argument #3 to " ..
        "'to_thread' (args[3]: cannot send userdata)", e1)
      assert.are.equal(here .. ":" .. (line + 2) .. ": bad argument #2 to " ..
        "'to_thread' (args[2]: cannot send userdata)", e2)
      assert.are.equal(here .. ":" .. (line + 3) .. ": bad argument #4 to " ..
        "'offload' (args[4]: cannot send userdata)", e3)
      local obj = S:offload(function()
        local o = {}
        function o.put(_, x) return x end
        function o.take(x) return x end
        return o
      end)
      assert.matches("bad argument #1 to 'put' (args[1]: cannot send " ..
        "userdata)", raised(function() local _ = obj:put(io.stdout) end), 1,
        true)
      assert.matches("bad argument #2 to 'take' (args[2]: ",
        raised(function() local _ = obj.take(1, io.stdout) end), 1, true)
      assert.are.equal(5, obj:put(5)) -- still works after the refusals
      -- inside synchro.run, where the call awaits
      local e4 = synchro.run(function()
        return raised(function() local _ = S:to_thread(function() end, 1, 2,
          io.stdout) end)
      end)
      assert.matches("^" .. here:gsub("%p", "%%%0") .. ":%d+: bad argument " ..
        "#4 to 'to_thread' %(args%[4%]: cannot send userdata%)$", e4)
    end)

    it("wrapped functions and generators", function()
      local fetch = S:wrap(function(a, b) return a, b end)
      local line = debug.getinfo(1, "l").currentline
      local e1 = raised(function() local _ = fetch(1, io.stdout) end)
      assert.are.equal(here .. ":" .. (line + 1) .. ": bad argument #2 to " ..
        "'fetch' (args[2]: cannot send userdata)", e1)
      local gen = S:wrap_generator(function()
        local v = synchro.emit(1)
        synchro.emit(v)
      end)
      local it = gen()
      assert.are.equal(1, it:next())
      assert.matches("bad argument #1 to 'send' (args[1]: cannot send " ..
        "userdata)", raised(function() local _ = it:send(io.stdout) end), 1,
        true)
      assert.are.equal("ok", it:send("ok")) -- the step was never sent
      it:close()
    end)
  end)

describe("S:offload and S:offload_module", function()
  local S
  setup(function() S = synchro.new({ name = "offload-spec", slow = 0 }) end)
  teardown(function() S:close() end)

  it("keeps a blocking object's state across 1,000 calls", function()
    local counter = S:offload(function(start)
      local c = { n = start }
      function c:inc(d)
        self.n = self.n + (d or 1)
        return self.n
      end
      function c.get() return c.n end
      function c:chain() return self end
      return c
    end, 10)
    for _ = 1, 1000 do counter:inc() end
    assert.are.equal(1010, counter.get())
    assert.are.equal(1015, counter:inc(5))
    assert.are.equal(counter, counter:chain()) -- the object: the proxy
  end)

  it("offloads a module whose functions await in async code, in order",
    function()
      local m = S:offload_module("spec.fixtures.blocking_counter")
      local total, n, ticks = synchro.run(function()
        local aio = synchro.aio
        local ticking, count = true, 0
        local ticker = aio.spawn(function()
          while ticking do
            count = count + 1
            aio.sleep(0.01)
          end
        end)
        local fns = {}
        for i = 1, 100 do fns[i] = function() return m.add(i) end end
        aio.gather((table.unpack or unpack)(fns))
        m.block(0.5) -- blocks the worker, not this scheduler
        ticking = false
        ticker:join()
        local t, c = m.total()
        return t, c, count
      end)
      assert.are.equal(5050, total)
      assert.are.equal(100, n)
      assert.is_true(ticks >= 5, "ticks: " .. ticks)
      -- the state lasts, and stays in the worker (not this VM's copy)
      assert.are.equal(5051, m.add(1))
      assert.are.equal(0, require("spec.fixtures.blocking_counter").count)
      local ok, err = pcall(m.fail)
      assert.is_false(ok)
      assert.matches("counter failed", err, 1, true)
    end)

  it("interrupts a running method when cancelled", function()
    local m = S:offload_module("spec.fixtures.blocking_counter")
    local t0 = util.now()
    local r, msg = synchro.run(function()
      return synchro.aio.timeout(0.1, m.block, 60)
    end)
    assert.is_nil(r)
    assert.matches("^ETIMEDOUT", msg)
    assert.is_true(util.now() - t0 < 5)
    assert.are.equal(1, m.add(1)) -- still usable
  end)

  it("lets the worker go with the proxy", function()
    local count = S:wrap(function()
      return require("synchro.aio.thread")._offload_count()
    end)
    for _ = 1, 3 do collectgarbage() end -- earlier tests' proxies
    util.sleep(0.1)
    local before = count()
    local m = S:offload_module("spec.fixtures.blocking_counter")
    assert.are.equal(before + 1, count())
    assert.are.equal(1, m.add(1))
    m = nil -- luacheck: ignore
    for _ = 1, 3 do collectgarbage() end
    local gone = false
    for _ = 1, 100 do
      if count() == before then gone = true break end
      util.sleep(0.02)
    end
    assert.is_true(gone)
  end)

  it("S:close() in the middle of a generator and of a method call",
    function()
      local S2 = synchro.new({ slow = 0 })
      local m = S2:offload_module("spec.fixtures.blocking_counter")
      local gen = S2:wrap(function()
        local aio = require "synchro.aio"
        local it = aio.iter_in_thread({ buffer = 2 }, function()
          while true do coroutine.yield(1) end
        end)
        while true do
          it:next()
          aio.sleep(0.001)
        end
      end)
      local t0
      local d1, d2, e1, e2 = synchro.run(function()
        local aio = synchro.aio
        local t1 = aio.spawn(m.block, 60)
        local t2 = aio.spawn(function() return gen() end)
        aio.sleep(0.1)
        local running = not t1:done() and not t2:done()
        t0 = util.now()
        S2:close()
        -- (no pcall around an await: PUC 5.1 inside synchro.run)
        local a, b = aio.gather({ return_errors = true }, t1, t2)
        return running, t1.ok == false and t2.ok == false, a, b
      end)
      assert.is_true(util.now() - t0 < 10)
      assert.is_true(d1, "both were running")
      assert.is_true(d2, tostring(e1) .. " " .. tostring(e2))
      assert.has_error(function() m.add(1) end)
    end)

  it("refuses bad arguments and objects that cannot be offloaded",
    function()
      assert.has_error(function() S:offload(42) end,
        "bad argument #1 to 'offload' (function expected, got number)")
      assert.has_error(function() S:offload_module(42) end,
        "bad argument #1 to 'offload_module' (string expected, got number)")
      local ok, err = pcall(S.offload, S, function() return 42 end)
      assert.is_false(ok)
      assert.matches("must be a table or a userdata, got number", err, 1,
        true)
      local ok2, err2 = pcall(S.offload_module, S, "no.such.module")
      assert.is_false(ok2)
      assert.matches("module 'no.such.module' not found", err2, 1, true)
    end)
end)
