-- synchro.aio's synchronization primitives (channel, event, semaphore,
-- lock, interval) and gather's options: each case runs as a task on a
-- synchronizer's loop and as a task of synchro.run on this thread.
local synchro = require "synchro"
local util = require "spec.helpers.util"

-- The cases are sent to the loop VM as code: no upvalues but globals.
-- Their pcall must let a task wait inside it under synchro.run on Lua 5.1
-- too, hence sched.yieldable_pcalls().
local cases = {}

function cases.rendezvous()
  local aio = require "synchro.aio"
  local ch = aio.channel()
  local log = {}
  local producer = aio.spawn(function()
    log[#log + 1] = "send a"
    assert(ch:send("a"))
    log[#log + 1] = "sent a"
    assert(ch:send("b"))
    log[#log + 1] = "sent b"
  end)
  aio.sleep(0.01)
  -- the producer waits in send until somebody receives
  local a = ch:recv()
  log[#log + 1] = "recv " .. a
  local b = ch:recv()
  log[#log + 1] = "recv " .. b
  producer:join()
  return table.concat(log, ","), ch:len()
end

function cases.buffered()
  local aio = require "synchro.aio"
  local ch = aio.channel(3)
  local sent = 0
  local producer = aio.spawn(function()
    for i = 1, 5 do
      ch:send(i)
      sent = i
    end
  end)
  aio.sleep(0.01)
  local full_at, len = sent, ch:len() -- 3 sent into the buffer, 4th waits
  local got = {}
  for _ = 1, 5 do got[#got + 1] = ch:recv() end
  producer:join()
  local unbounded = aio.channel(math.huge)
  for i = 1, 100 do unbounded:send(i) end
  return full_at, len, table.concat(got, ","), unbounded:len()
end

function cases.close()
  local aio = require "synchro.aio"
  local ch = aio.channel(2)
  ch:send("x")
  ch:send("y")
  -- a sender waiting on the full buffer learns about the close
  local waiting_sender = aio.spawn(function() return ch:send("z") end)
  aio.sleep(0.01)
  ch:close()
  ch:close() -- idempotent
  local r = { waiting_sender:join() }
  local out = { r[1], r[2], r[3] }
  out[4], out[5] = ch:recv() -- buffered values survive the close
  out[6], out[7] = ch:recv()
  out[8], out[9] = ch:recv() -- drained: nil, false
  local again = { ch:send("late") }
  out[10], out[11], out[12] = again[1], again[2], again[3]
  -- receivers waiting on an empty channel get nil, false at close
  local ch2 = aio.channel()
  local r1 = aio.spawn(function() return { ch2:recv() } end)
  local r2 = aio.spawn(function() return { ch2:recv() } end)
  aio.sleep(0.01)
  ch2:close()
  local a, b = r1:join(), r2:join()
  out[13] = a[1] == nil and a[2] == false and b[1] == nil and b[2] == false
  out[14] = ch:is_closed()
  return out
end

function cases.iterate()
  local aio = require "synchro.aio"
  local ch = aio.channel(1)
  aio.spawn(function()
    for i = 1, 5 do ch:send(i * 10) end
    ch:close()
  end)
  local got = {}
  for v in ch:iter() do got[#got + 1] = v end
  return table.concat(got, ",")
end

function cases.many_tasks()
  local aio = require "synchro.aio"
  local ch = aio.channel(4)
  local producers, consumers = {}, {}
  local seen, count = {}, 0
  for p = 1, 10 do
    producers[p] = aio.spawn(function()
      for i = 1, 100 do
        assert(ch:send(p * 1000 + i))
        if i % 17 == 0 then aio.sleep(0) end
      end
    end)
  end
  for c = 1, 5 do
    consumers[c] = aio.spawn(function()
      local mine = 0
      while true do
        local v, ok = ch:recv()
        if not ok then return mine end
        assert(not seen[v], "received twice")
        seen[v] = true
        count = count + 1
        mine = mine + 1
      end
    end)
  end
  for p = 1, 10 do producers[p]:join() end
  ch:close()
  local per = {}
  for c = 1, 5 do per[c] = consumers[c]:join() end
  local missing = 0
  for p = 1, 10 do
    for i = 1, 100 do
      if not seen[p * 1000 + i] then missing = missing + 1 end
    end
  end
  return count, missing, #per, ch.receivers.n, ch.senders.n
end

function cases.cancel_recv()
  local aio = require "synchro.aio"
  local pcall = require("synchro.sched").yieldable_pcalls()
  local ch = aio.channel()
  local t = aio.spawn(function() return ch:recv() end)
  aio.sleep(0.01)
  local queued = ch.receivers.n
  local t0 = aio.now()
  t:cancel()
  local ok, err = pcall(t.join, t)
  local dt = aio.now() - t0
  -- timeouts around recv: each leaves nothing behind in the channel
  for _ = 1, 50 do
    local v, msg = aio.timeout(0.001, ch.recv, ch)
    assert(v == nil and msg:match("^ETIMEDOUT"))
  end
  local left = ch.receivers.n
  -- the channel still works: a new receiver gets the next value
  local r = aio.spawn(function() return ch:recv() end)
  aio.sleep(0.01)
  ch:send("after")
  return queued, ok, aio.is_cancelled(err), dt < 1, left, r:join()
end

function cases.cancel_after_handoff()
  local aio = require "synchro.aio"
  local pcall = require("synchro.sched").yieldable_pcalls()
  local out = {}
  -- channel: the value handed to a receiver cancelled before it ran goes
  -- back to the channel
  local ch = aio.channel()
  local r = aio.spawn(function() return ch:recv() end)
  aio.sleep(0.01)
  ch:send("v") -- handed to r, which has not run yet
  r:cancel()
  local ok, err = pcall(r.join, r)
  out[1] = not ok and aio.is_cancelled(err)
  out[2] = aio.timeout(5, ch.recv, ch) -- (a lost value would hang here)
  -- semaphore: the permit goes to the next waiter
  local sem = aio.semaphore(1)
  sem:acquire()
  local a = aio.spawn(function() sem:acquire() return "a" end)
  local b = aio.spawn(function() sem:acquire() return "b" end)
  aio.sleep(0.01)
  sem:release() -- handed to a
  a:cancel()
  out[3] = pcall(a.join, a)
  out[4] = aio.timeout(5, b.join, b) -- (a lost permit would hang here)
  out[5] = sem:value()
  -- lock: the same
  local lock = aio.lock()
  lock:acquire()
  local c = aio.spawn(function() lock:acquire() return "c" end)
  local d = aio.spawn(function()
    lock:acquire()
    lock:release()
    return "d"
  end)
  aio.sleep(0.01)
  lock:release() -- handed to c
  c:cancel()
  out[6] = pcall(c.join, c)
  out[7] = aio.timeout(5, d.join, d)
  out[8] = lock:locked() -- c never got it, d released it
  -- send: once a receiver took the value, the send counts as done even
  -- if the sender was cancelled before it ran again
  local ch2 = aio.channel()
  local s = aio.spawn(function() return ch2:send("w") end)
  aio.sleep(0.01)
  out[9] = ch2:recv()
  s:cancel()
  out[10] = s:join()
  return out
end

function cases.event()
  local aio = require "synchro.aio"
  local pcall = require("synchro.sched").yieldable_pcalls()
  local ev = aio.event()
  local woken = 0
  local tasks = {}
  for i = 1, 5 do
    tasks[i] = aio.spawn(function()
      ev:wait()
      woken = woken + 1
    end)
  end
  local canceled = aio.spawn(function() ev:wait() end)
  aio.sleep(0.01)
  local before = woken
  canceled:cancel()
  local cok = pcall(canceled.join, canceled)
  local queued = ev.waiters.n
  ev:set()
  ev:set() -- twice is fine
  for i = 1, 5 do tasks[i]:join() end
  local set_now = ev:is_set()
  local t0 = aio.now()
  ev:wait() -- set: returns at once
  local quick = aio.now() - t0 < 1
  ev:clear()
  local cleared = not ev:is_set()
  local later = aio.spawn(function() return ev:wait() end)
  aio.sleep(0.01)
  local still_waiting = not later:done()
  ev:set()
  return before, cok, queued, woken, set_now, quick, cleared, still_waiting,
    later:join()
end

function cases.semaphore()
  local aio = require "synchro.aio"
  local pcall = require("synchro.sched").yieldable_pcalls()
  local sem = aio.semaphore(3)
  local inside, max_inside = 0, 0
  local order = {}
  local tasks = {}
  for i = 1, 12 do
    tasks[i] = aio.spawn(function()
      sem:acquire()
      order[#order + 1] = i
      inside = inside + 1
      if inside > max_inside then max_inside = inside end
      aio.sleep(0.002)
      inside = inside - 1
      sem:release()
    end)
  end
  for i = 1, 12 do tasks[i]:join() end
  -- waiters got their permits first come, first served
  local fifo = true
  for i = 1, 12 do if order[i] ~= i then fifo = false end end
  -- with() releases on error and passes results through
  local ok, err = pcall(sem.with, sem, function() error("inside", 0) end)
  local v = sem:with(function(x) return x * 2 end, 21)
  -- bounded: release beyond max raises
  local bounded = aio.semaphore(1, 1)
  local bok, berr = pcall(bounded.release, bounded)
  local zero = aio.semaphore(0)
  aio.spawn(function() zero:release() end)
  zero:acquire() -- a semaphore(0) as a signal
  return max_inside, fifo, ok, err, v, sem:value(), bok,
    berr:match("too many") ~= nil, zero:value()
end

function cases.lock()
  local aio = require "synchro.aio"
  local pcall = require("synchro.sched").yieldable_pcalls()
  local function bump(shared, lock)
    for _ = 1, 5 do
      if lock then lock:acquire() end
      local v = shared.n
      aio.sleep(0) -- a wait inside the critical section
      shared.n = v + 1
      if lock then lock:release() end
    end
  end
  local function run(lock)
    local shared = { n = 0 }
    local tasks = {}
    for i = 1, 8 do tasks[i] = aio.spawn(bump, shared, lock) end
    for i = 1, 8 do tasks[i]:join() end
    return shared.n
  end
  local unlocked = run(nil) -- updates get lost without the lock
  local lock = aio.lock()
  local locked = run(lock)
  lock:acquire()
  local rok, rerr = pcall(lock.acquire, lock) -- not reentrant
  local other = aio.spawn(function() return pcall(lock.release, lock) end)
  local ook, oerr = other:join()
  lock:release()
  local wok, werr = pcall(lock.with, lock, function() error("boom", 0) end)
  local free_after = not lock:locked()
  local v = lock:with(function(a, b) return a + b end, 1, 2)
  return unlocked < 40, locked, rok, rerr:match("not reentrant") ~= nil,
    ook, oerr:match("does not hold") ~= nil, wok, werr, free_after, v
end

function cases.interval()
  local aio = require "synchro.aio"
  local t0 = aio.now()
  local iv = aio.interval(0.02)
  -- A busy machine may wake us late, and a late tick skips numbers: check
  -- what holds anyway. Tick k never comes before start + k * period, and
  -- the numbers grow.
  local ticks, on_time = {}, true
  local function tick()
    local k = iv:tick()
    if aio.now() - t0 < k * 0.02 - 1e-9 then on_time = false end
    return k
  end
  for i = 1, 5 do ticks[i] = tick() end
  local elapsed = aio.now() - t0
  -- late: ticks missed while busy are skipped, not made up
  aio.sleep(0.07)
  local k = tick()
  local after_late = tick()
  -- stop() wakes a task waiting in tick()
  local slow = aio.interval(10)
  local waiter = aio.spawn(function() return slow:tick() end)
  aio.sleep(0.01)
  local s0 = aio.now()
  slow:stop()
  local stopped = waiter:join()
  local quick = aio.now() - s0 < 1
  iv:stop()
  return ticks, elapsed, k, after_late - k, stopped, quick, iv:tick(),
    on_time
end

function cases.gather_errors()
  local aio = require "synchro.aio"
  local pcall = require("synchro.sched").yieldable_pcalls()
  local finished = false
  local a, b, c = aio.gather({ return_errors = true },
    function() return 1 end,
    function() error({ code = 7 }) end,
    function() aio.sleep(0.02) finished = true return 3 end)
  -- unknown options and bad items raise before anything runs
  local ran = false
  local ok1, e1 = pcall(aio.gather, { bogus = true },
    function() ran = true end)
  local ok2, e2 = pcall(aio.gather, { return_errors = true },
    function() ran = true end, 42)
  aio.sleep(0.01)
  return a, b.code, c, finished, ok1, e1:match("unknown option 'bogus'") ~= nil,
    ok2, e2:match("bad argument #3 to 'gather'") ~= nil, ran
end

function cases.misuse()
  local aio = require "synchro.aio"
  local pcall = require("synchro.sched").yieldable_pcalls()
  local msgs = {}
  local function try(fn, ...)
    local ok, err = pcall(fn, ...)
    msgs[#msgs + 1] = ok and "no error" or tostring(err):gsub("^.-:%d+: ", "")
  end
  try(aio.channel, -1)
  try(aio.channel, 1.5)
  try(aio.channel().send, "x", 1)
  local ch = aio.channel()
  try(ch.send, ch, nil)
  try(ch.recv, "x")
  try(aio.semaphore, "3")
  try(aio.semaphore, 2, 1)
  try(aio.interval, 0 / 0)
  try(aio.lock().release, aio.lock())
  try(aio.semaphore().with, aio.semaphore(), 42)
  return msgs
end

local function check(name, fn)
  if name == "rendezvous" then
    local log, len = fn()
    assert.are.equal("send a,recv a,sent a,sent b,recv b", log)
    assert.are.equal(0, len)
  elseif name == "buffered" then
    local full_at, len, got, unbounded = fn()
    assert.are.equal(3, full_at)
    assert.are.equal(3, len)
    assert.are.equal("1,2,3,4,5", got)
    assert.are.equal(100, unbounded)
  elseif name == "close" then
    assert.are.same({ nil, "ECLOSED: channel is closed", "ECLOSED",
      "x", true, "y", true, nil, false,
      nil, "ECLOSED: channel is closed", "ECLOSED", true, true }, fn())
  elseif name == "iterate" then
    assert.are.equal("10,20,30,40,50", fn())
  elseif name == "many_tasks" then
    local count, missing, consumers, nr, ns = fn()
    assert.are.equal(1000, count)
    assert.are.equal(0, missing)
    assert.are.equal(5, consumers)
    assert.are.equal(0, nr)
    assert.are.equal(0, ns)
  elseif name == "cancel_recv" then
    local queued, ok, cancelled, prompt, left, after = fn()
    assert.are.equal(1, queued)
    assert.is_false(ok)
    assert.is_true(cancelled)
    assert.is_true(prompt)
    assert.are.equal(0, left)
    assert.are.equal("after", after)
  elseif name == "cancel_after_handoff" then
    assert.are.same({ true, "v", false, "b", 0, false, "d", false, "w",
      true }, fn())
  elseif name == "event" then
    assert.are.same({ 0, false, 5, 5, true, true, true, true, true },
      { fn() })
  elseif name == "semaphore" then
    assert.are.same({ 3, true, false, "inside", 42, 3, false, true, 0 },
      { fn() })
  elseif name == "lock" then
    assert.are.same({ true, 40, false, true, false, true, false, "boom",
      true, 3 }, { fn() })
  elseif name == "interval" then
    local ticks, elapsed, k, step, stopped, quick, after_stop, on_time = fn()
    -- regression: under load ticks were 1,2,3,4,6, which is right (tick 5
    -- came late, so it counts as 6); the spec expected 1,2,3,4,5
    assert.is_true(ticks[1] >= 1, "first tick " .. ticks[1])
    for i = 2, 5 do
      assert.is_true(ticks[i] > ticks[i - 1], table.concat(ticks, ","))
    end
    assert.is_true(on_time, "a tick came early: " .. table.concat(ticks, ","))
    -- tick k never comes before start + k * period (drift-free)
    assert.is_true(elapsed >= 0.1 - 1e-9, "elapsed " .. elapsed)
    assert.is_true(elapsed < 5, "elapsed " .. elapsed)
    assert.is_true(k >= 8, "tick after a late start: " .. k)
    assert.is_true(step >= 1, "step " .. step) -- 1 unless late again
    assert.is_nil(stopped)
    assert.is_true(quick)
    assert.is_nil(after_stop)
  elseif name == "gather_errors" then
    assert.are.same({ 1, 7, 3, true, false, true, false, true, false },
      { fn() })
  elseif name == "misuse" then
    assert.are.same({
      "bad argument #1 to 'channel' (non-negative integer expected, got -1)",
      "bad argument #1 to 'channel' (non-negative integer expected, got 1.5)",
      "bad argument #1 to 'send' (channel expected, got string)",
      "bad argument #2 to 'send' (value expected, got nil)",
      "bad argument #1 to 'recv' (channel expected, got string)",
      "bad argument #1 to 'semaphore' (non-negative integer expected, got string)",
      "bad argument #2 to 'semaphore' (max is less than n)",
      "bad argument #1 to 'interval' (seconds is NaN)",
      "lock released by a task that does not hold it",
      "bad argument #2 to 'with' (function expected, got number)",
    }, fn())
  end
end

local names = { "rendezvous", "buffered", "close", "iterate", "many_tasks",
  "cancel_recv", "cancel_after_handoff", "event", "semaphore", "lock",
  "interval", "gather_errors", "misuse" }

describe("synchro.aio sync primitives on the loop", function()
  local S
  setup(function() S = synchro.new({ name = "aio-sync-spec" }) end)
  teardown(function() S:close() end)

  for _, name in ipairs(names) do
    it(name, function()
      if name == "iterate" and util.puc51 then
        return pending("PUC Lua 5.1 cannot wait inside a for iterator")
      end
      local handles = S:wrap(function()
        return require("synchro.core").loop_handles()
      end)
      local before = handles()
      check(name, S:wrap(cases[name]))
      assert.are.equal(before, handles())
    end)
  end
end)

describe("synchro.aio sync primitives in synchro.run", function()
  for _, name in ipairs(names) do
    it(name, function()
      if name == "iterate" and util.puc51 then
        return pending("PUC Lua 5.1 cannot wait inside a for iterator")
      end
      check(name, function() return synchro.run(cases[name]) end)
    end)
  end
end)

describe("synchro.aio sync primitives outside tasks", function()
  it("do what needs no wait, and say when a wait needs a task", function()
    local aio = require "synchro.aio"
    local ch = aio.channel(1)
    assert.is_true(ch:send("x"))
    assert.are.same({ "x", true }, { ch:recv() })
    local ok, err = pcall(ch.recv, ch)
    assert.is_false(ok)
    assert.matches("recv must be called from async code", err, 1, true)
    local ev = aio.event()
    ev:set()
    assert.is_true(ev:wait())
    local sem = aio.semaphore(1)
    assert.is_true(sem:acquire())
    sem:release()
    -- and inside synchro.run, the same objects work with waits
    local log = {}
    synchro.run(function()
      local waiter = aio.spawn(function()
        ev:clear()
        ev:wait()
        log[#log + 1] = "woken"
      end)
      aio.sleep(0.01)
      ev:set()
      waiter:join()
    end)
    assert.are.same({ "woken" }, log)
  end)
end)
