--- synchro.aio.request: how async code waits for the loop. `queue` is
--- for a handle that delivers events until it is closed (signals, file
--- watches), with one cancellation policy: a cancelled task stops waiting
--- at once and raises the cancellation; the events stay queued.
local sched = require "synchro.sched"

local M = {}

local ypcall = sched.yieldable_pcalls()

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
