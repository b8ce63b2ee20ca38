--- synchro.aio.request: how async code waits for the loop. One helper for
--- a request that completes once (`await`) and one for a handle that
--- delivers events until it is closed (`queue`), with one cancellation
--- policy: a cancelled task stops waiting at once and raises the
--- cancellation; the request is abandoned (its late result is dropped by
--- the C side, which also owns the "VM is gone" rule).
local sched = require "synchro.sched"

local M = {}

local pack = sched.pack
local unpack = table.unpack or unpack
local ypcall = sched.yieldable_pcalls()

--- Calls `start(cb, ...)`, which begins a request and returns an object
--- with `cancel()` (or nil, message, name if it cannot start), then waits
--- until the request calls `cb(results...)` and returns those results.
--- A cancelled task calls `req:cancel()` and raises the cancellation;
--- `on_abandon(results...)`, if given, receives results that arrived for
--- a task that was cancelled before it ran again (to close a file, say).
---@param what string the name for error messages
---@param start fun(cb: fun(...), ...): any, string?, string?
---@param on_abandon? fun(...)
---@return ...
function M.await(what, start, on_abandon, ...)
  local task, token = sched.prepare(what)
  local res
  local req, msg, code = start(function(...)
    res = pack(...)
    task.sched:wake(task, token)
  end, ...)
  if not req then return nil, msg, code end
  local ok, err = ypcall(sched.suspend, task, function() req:cancel() end)
  if not ok then
    if res and on_abandon then on_abandon(unpack(res, 1, res.n)) end
    error(err, 0)
  end
  return unpack(res, 1, res.n)
end

--- A queue of events that a C handle's callback pushes and one task at a
--- time pops.
---@class synchro.aio.Queue
local Queue = {}
Queue.__index = Queue
M.Queue = Queue

---@return synchro.aio.Queue
function M.queue()
  return setmetatable({ head = 1, tail = 0, waiter = nil, closed = false },
    Queue)
end

--- Adds an event (not nil) and wakes the waiting task.
function Queue:push(v)
  self.tail = self.tail + 1
  self[self.tail] = v
  if self.waiter then self.waiter() end
end

--- Ends the queue: a waiting task gets nil.
function Queue:close()
  self.closed = true
  if self.waiter then self.waiter() end
end

--- The next event, waiting for it up to `timeout` seconds (nil: no
--- limit, already checked by the caller's time rule). Returns the event;
--- nil once the queue is closed and empty; nil, "ETIMEDOUT: ...",
--- "ETIMEDOUT" on timeout. Raises if another task is waiting.
---@param what string
---@param timeout number|nil
function Queue:pop(what, timeout)
  while self.head > self.tail do
    if self.closed then return nil end
    if self.waiter then
      error(("bad argument #1 to '%s' (another task is waiting)")
        :format(what), 3)
    end
    local task, token = sched.prepare(what)
    local expired = false
    local timer
    if timeout then
      timer = task.sched.backend.timer(function()
        expired = true
        task.sched:wake(task, token)
      end)
      timer:start(timeout)
    end
    self.waiter = function() task.sched:wake(task, token) end
    local ok, err = ypcall(sched.suspend, task)
    self.waiter = nil
    if timer then timer:close() end
    if not ok then error(err, 0) end
    if expired and self.head > self.tail then
      return nil, ("ETIMEDOUT: timed out after %g s"):format(timeout),
        "ETIMEDOUT"
    end
  end
  local v = self[self.head]
  self[self.head] = nil
  self.head = self.head + 1
  return v
end

return M
