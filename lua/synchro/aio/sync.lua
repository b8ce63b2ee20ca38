--- synchro.aio.sync: synchronization between tasks: channels, events,
--- semaphores, locks and drift-free intervals. Every field of the table
--- this module returns is copied into synchro.aio.
---
--- These primitives use only the scheduler (sched.prepare, suspend and
--- wake), so they work in tasks on a synchronizer's loop and in tasks of
--- synchro.run alike. Operations that do not have to wait (a send with room
--- in the buffer, event:set(), a release) work outside tasks too.
---
--- Cancellation: a task cancelled while it waits is taken out of the wait
--- queue at once, so nothing is ever handed to it. If a lock, a permit or a
--- received value had already been handed to it when the cancellation
--- arrived (it was woken but had not run yet), that hand-off is undone: the
--- lock or permit goes to the next waiter, the value back to the front of
--- the channel, and the wait raises the cancellation. The one exception is
--- send: once a receiver took the value, send returns true, and the
--- cancellation is raised at the task's next wait.
local core = require "synchro.core"
local sched = require "synchro.sched"

local M = {}

local unpack = table.unpack or unpack
local pack = sched.pack
local ypcall = sched.yieldable_pcalls()
local now = core.now
local floor = math.floor

local ECLOSED = "ECLOSED: channel is closed"

local argerror = require("synchro.check").argerror
local check_time = require("synchro.check").time

local function check_self(self, mt, fname, what)
  if getmetatable(self) ~= mt then
    argerror(1, fname, what .. " expected, got " .. type(self))
  end
end

-- Wait queues: doubly linked lists of waiters, so that a cancelled waiter
-- leaves in O(1). A waiter is { task =, token = } plus what its primitive
-- hands it.

local function q_new() return { n = 0 } end

local function q_push(q, w)
  w.queue = q
  w.prev, w.next = q.last, nil
  if q.last then q.last.next = w else q.first = w end
  q.last = w
  q.n = q.n + 1
end

local function q_remove(q, w)
  if w.queue ~= q then return end
  if w.prev then w.prev.next = w.next else q.first = w.next end
  if w.next then w.next.prev = w.prev else q.last = w.prev end
  w.queue, w.prev, w.next = nil, nil, nil
  q.n = q.n - 1
end

--- The first waiter whose task still waits for it, taken out of q.
local function q_shift(q)
  local w = q.first
  while w do
    q_remove(q, w)
    local task = w.task
    if task.state == "waiting" and task.token == w.token then return w end
    w = q.first
  end
  return nil
end

--- Marks w as served and wakes its task (maybe running it at once, when
--- no scheduler is running: the caller's state must be consistent).
local function hand(w)
  w.done = true
  w.task.sched:wake(w.task, w.token)
end

--- Waits in q until hand(w). Returns true, or false and the error (the
--- cancellation) with w out of q; w.done then says whether something was
--- handed to it before the cancellation reached it.
local function wait_in(q, w, what)
  local task, token = sched.prepare(what)
  w.task, w.token = task, token
  q_push(q, w)
  local ok, err = ypcall(sched.suspend, task, function() q_remove(q, w) end)
  if not ok then q_remove(q, w) end
  return ok, err
end

local function check_count(x, n, fname)
  if type(x) ~= "number" or x < 0 or
      (x ~= math.huge and x ~= floor(x)) then
    argerror(n, fname, "non-negative integer expected, got " ..
      (type(x) == "number" and tostring(x) or type(x)))
  end
end

-- Channels ----------------------------------------------------------------

---@class synchro.Channel
local Channel = {}
Channel.__index = Channel

--- A channel between tasks. `capacity` 0 (the default) makes a rendezvous
--- channel: send waits until a receiver takes the value; `n > 0` buffers up
--- to n values; `math.huge` never makes senders wait.
---@param capacity? integer
---@return synchro.Channel
function M.channel(capacity)
  if capacity == nil then capacity = 0 end
  check_count(capacity, 1, "channel")
  return setmetatable({
    capacity = capacity,
    buf = {}, head = 1, tail = 0,
    senders = q_new(), receivers = q_new(),
    closed = false,
  }, Channel)
end

local function buffered(ch) return ch.tail - ch.head + 1 end

local function buf_push(ch, v)
  local tail = ch.tail + 1
  ch.tail = tail
  ch.buf[tail] = v
end

local function buf_shift(ch)
  local head = ch.head
  local v = ch.buf[head]
  ch.buf[head] = nil
  if head == ch.tail then
    ch.head, ch.tail = 1, 0
  else
    ch.head = head + 1
  end
  return v
end

--- Gives a value back to the channel, in front of everything else: to the
--- first waiting receiver, or to the front of the buffer.
local function put_back(ch, v)
  local r = q_shift(ch.receivers)
  if r then
    r.value = v
    hand(r)
  else
    local head = ch.head - 1
    ch.head = head
    ch.buf[head] = v
  end
end

--- Sends v (not nil). Waits while the buffer is full (for a rendezvous
--- channel: until a receiver takes v). Returns true, or
--- `nil, "ECLOSED: channel is closed", "ECLOSED"` if the channel is closed
--- (before or while waiting: then v was not delivered).
---@param v any
---@return true|nil ok
---@return string? err
---@return string? code
function Channel:send(v)
  check_self(self, Channel, "send", "channel")
  if v == nil then argerror(2, "send", "value expected, got nil") end
  if self.closed then return nil, ECLOSED, "ECLOSED" end
  local r = q_shift(self.receivers)
  if r then
    r.value = v
    hand(r)
    return true
  end
  if buffered(self) < self.capacity then
    buf_push(self, v)
    return true
  end
  local w = { value = v }
  local ok, err = wait_in(self.senders, w, "channel:send")
  -- A receiver took v (even if a cancellation came after): delivered.
  if w.done and w.delivered then return true end
  if not ok then error(err, 0) end
  return nil, ECLOSED, "ECLOSED"
end

--- Receives the next value, waiting while there is none. Returns
--- `value, true`, or `nil, false` once the channel is closed and drained.
---@return any value
---@return boolean ok
function Channel:recv()
  check_self(self, Channel, "recv", "channel")
  if buffered(self) > 0 then
    local v = buf_shift(self)
    if buffered(self) < self.capacity then
      local s = q_shift(self.senders)
      if s then
        buf_push(self, s.value)
        s.delivered = true
        hand(s)
      end
    end
    return v, true
  end
  local s = q_shift(self.senders)
  if s then
    s.delivered = true
    hand(s)
    return s.value, true
  end
  if self.closed then return nil, false end
  local w = {}
  local ok, err = wait_in(self.receivers, w, "channel:recv")
  if not ok then
    if w.done and w.value ~= nil then put_back(self, w.value) end
    error(err, 0)
  end
  if w.value == nil then return nil, false end
  return w.value, true
end

--- Closes the channel: waiting and later senders get ECLOSED; receivers
--- get the values still buffered, then `nil, false`. Idempotent.
function Channel:close()
  check_self(self, Channel, "close", "channel")
  if self.closed then return end
  self.closed = true
  -- Take the waiters first: a woken task may run (and wait) at once.
  local receivers, senders = {}, {}
  local w = q_shift(self.receivers)
  while w do
    receivers[#receivers + 1] = w
    w = q_shift(self.receivers)
  end
  w = q_shift(self.senders)
  while w do
    senders[#senders + 1] = w
    w = q_shift(self.senders)
  end
  for i = 1, #receivers do hand(receivers[i]) end
  for i = 1, #senders do hand(senders[i]) end
end

--- Whether close() was called.
---@return boolean
function Channel:is_closed()
  check_self(self, Channel, "is_closed", "channel")
  return self.closed
end

--- The number of values buffered (sent, not yet received).
---@return integer
function Channel:len()
  check_self(self, Channel, "len", "channel")
  return buffered(self)
end

--- An iterator over received values, ending when the channel is closed
--- and drained: `for v in ch:iter() do ... end`. (PUC Lua 5.1 cannot wait
--- inside a for iterator: loop over ch:recv() there.)
---@return fun(): any
function Channel:iter()
  check_self(self, Channel, "iter", "channel")
  return function()
    return (self:recv())
  end
end

-- Events ------------------------------------------------------------------

---@class synchro.Event
local Event = {}
Event.__index = Event

--- An event: tasks wait until it is set.
---@return synchro.Event
function M.event()
  return setmetatable({ flag = false, waiters = q_new() }, Event)
end

--- Sets the event and wakes every waiting task.
function Event:set()
  check_self(self, Event, "set", "event")
  if self.flag then return end
  self.flag = true
  local all = {}
  local w = q_shift(self.waiters)
  while w do
    all[#all + 1] = w
    w = q_shift(self.waiters)
  end
  for i = 1, #all do hand(all[i]) end
end

--- Unsets the event: later waits wait again.
function Event:clear()
  check_self(self, Event, "clear", "event")
  self.flag = false
end

---@return boolean
function Event:is_set()
  check_self(self, Event, "is_set", "event")
  return self.flag
end

--- Waits until the event is set (returns at once if it is); returns true.
---@return true
function Event:wait()
  check_self(self, Event, "wait", "event")
  if self.flag then return true end
  local ok, err = wait_in(self.waiters, {}, "event:wait")
  if not ok then error(err, 0) end
  return true
end

-- Semaphores --------------------------------------------------------------

---@class synchro.Semaphore
local Semaphore = {}
Semaphore.__index = Semaphore

--- A semaphore with n free permits (default 1). Waiters get permits in
--- the order they asked for them. With `max`, a release that would make
--- more than max permits free raises (a bounded semaphore).
---@param n? integer
---@param max? integer
---@return synchro.Semaphore
function M.semaphore(n, max)
  if n == nil then n = 1 end
  check_count(n, 1, "semaphore")
  if max ~= nil then
    check_count(max, 2, "semaphore")
    if max < n then argerror(2, "semaphore", "max is less than n") end
  end
  return setmetatable({ count = n, max = max or math.huge,
    waiters = q_new() }, Semaphore)
end

local function sem_release(self)
  local w = q_shift(self.waiters)
  if w then
    hand(w) -- the permit goes straight to the first waiter
  else
    self.count = self.count + 1
  end
end

--- Takes a permit, waiting until one is free. Returns true.
---@return true
function Semaphore:acquire()
  check_self(self, Semaphore, "acquire", "semaphore")
  if self.count > 0 then
    self.count = self.count - 1
    return true
  end
  local w = {}
  local ok, err = wait_in(self.waiters, w, "semaphore:acquire")
  if not ok then
    if w.done then sem_release(self) end -- pass the permit on
    error(err, 0)
  end
  return true
end

--- Gives a permit back (to the first waiter, if any). On a bounded
--- semaphore, a release beyond max free permits raises.
function Semaphore:release()
  check_self(self, Semaphore, "release", "semaphore")
  if self.count >= self.max then
    error("semaphore released too many times (max " .. self.max .. ")", 2)
  end
  sem_release(self)
end

--- The number of free permits.
---@return integer
function Semaphore:value()
  check_self(self, Semaphore, "value", "semaphore")
  return self.count
end

local function with(self, fn, ...)
  if type(fn) ~= "function" then
    argerror(2, "with", "function expected, got " .. type(fn))
  end
  self:acquire()
  local r = pack(ypcall(fn, ...))
  self:release()
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

--- Runs fn(...) holding a permit; releases it however fn ends, and
--- returns fn's results (or raises its error).
---@param fn async fun(...): ...
---@return ...
function Semaphore:with(fn, ...)
  check_self(self, Semaphore, "with", "semaphore")
  return with(self, fn, ...)
end

-- Locks -------------------------------------------------------------------

---@class synchro.Lock
local Lock = {}
Lock.__index = Lock

--- A mutual-exclusion lock owned by the task that acquired it; not
--- reentrant. Waiters get it in the order they asked.
---@return synchro.Lock
function M.lock()
  return setmetatable({ owner = nil, waiters = q_new() }, Lock)
end

local function lock_release(self)
  local w = q_shift(self.waiters)
  if w then
    self.owner = w.task
    hand(w)
  else
    self.owner = nil
  end
end

--- Acquires the lock, waiting while another task holds it. Returns true.
---@return true
function Lock:acquire()
  check_self(self, Lock, "acquire", "lock")
  local me = sched.task("lock:acquire")
  if self.owner == me then
    error("lock already held by this task (locks are not reentrant)", 2)
  end
  if self.owner == nil then
    self.owner = me
    return true
  end
  local w = {}
  local ok, err = wait_in(self.waiters, w, "lock:acquire")
  if not ok then
    if w.done then lock_release(self) end -- pass the lock on
    error(err, 0)
  end
  return true
end

--- Releases the lock (to the first waiter, if any). Only the task that
--- holds it may release it.
function Lock:release()
  check_self(self, Lock, "release", "lock")
  if self.owner == nil or self.owner ~= sched.current_task() or
      not sched.in_task() then
    error("lock released by a task that does not hold it", 2)
  end
  lock_release(self)
end

--- Whether some task holds the lock.
---@return boolean
function Lock:locked()
  check_self(self, Lock, "locked", "lock")
  return self.owner ~= nil
end

--- Runs fn(...) holding the lock; releases it however fn ends, and
--- returns fn's results (or raises its error).
---@param fn async fun(...): ...
---@return ...
function Lock:with(fn, ...)
  check_self(self, Lock, "with", "lock")
  return with(self, fn, ...)
end

-- Intervals ---------------------------------------------------------------

---@class synchro.Interval
local Interval = {}
Interval.__index = Interval

--- A drift-free periodic ticker: tick number k is due at start + k *
--- seconds, where start is when interval() was called.
---@param seconds number
---@return synchro.Interval
function M.interval(seconds)
  if type(seconds) ~= "number" then
    argerror(1, "interval", "number expected, got " .. type(seconds))
  end
  -- the one time rule: 0 ticks at every step of the loop, no limit never
  local period = check_time(seconds, 1, "interval") or math.huge
  return setmetatable({
    period = period, start = now(), k = 0, stopped = false, waiters = {},
  }, Interval)
end

local function sleep_until(self, deadline)
  local task, token = sched.prepare("tick")
  local s = task.sched
  local timer = s.backend.timer(function() s:wake(task, token) end)
  timer:start(deadline - now())
  self.waiters[task] = token
  local ok, err = ypcall(sched.suspend, task)
  self.waiters[task] = nil
  timer:close()
  if not ok then error(err, 0) end
end

--- Waits for the next tick and returns its number (1, 2, ...). Ticks
--- missed because the caller was late are skipped, not made up: the
--- number then jumps. Returns nil once stop() was called (also to a task
--- waiting in tick()), so `for k in iv.tick, iv do ... end` works (not on
--- PUC Lua 5.1, which cannot wait inside a for iterator).
---@return integer|nil
function Interval:tick()
  check_self(self, Interval, "tick", "interval")
  local k = self.k + 1
  if self.period == 0 then -- every step: let the others run once
    sleep_until(self, now())
    if self.stopped then return nil end
    self.k = k
    return k
  end
  local deadline = self.start + k * self.period
  -- The loop's timers have millisecond steps: wait again if early.
  while not self.stopped and now() < deadline do
    sleep_until(self, deadline)
  end
  if self.stopped then return nil end
  local late = floor((now() - self.start) / self.period)
  if late > k then k = late end
  self.k = k
  return k
end

--- Stops the interval: tick() returns nil from now on, and tasks waiting
--- in tick() return nil at once.
function Interval:stop()
  check_self(self, Interval, "stop", "interval")
  if self.stopped then return end
  self.stopped = true
  local tasks = {}
  for task, token in pairs(self.waiters) do
    tasks[#tasks + 1] = { task, token }
  end
  for i = 1, #tasks do
    local task, token = tasks[i][1], tasks[i][2]
    task.sched:wake(task, token)
  end
end

return M
