--- synchro.aio.request: how async code waits for the loop.
---
--- `await` is for a libuv request (fs, dns, connect, a queued write or
--- datagram, shutdown): C starts it and calls a function once it ends
--- (src/aio/request.c). One cancellation policy: a cancelled task stops
--- waiting and raises the cancellation at once; its request is abandoned
--- (its results are never delivered, libuv still completes it and its
--- resources are freed; one not yet started on the threadpool is
--- dropped).
---
--- `queue` is for a handle that delivers events until it is closed
--- (signals, file watches), with the same policy: a cancelled task stops
--- waiting at once; the events stay queued.
local core = require "synchro.core"
local sched = require "synchro.sched"

local M = {}

local ypcall = sched.yieldable_pcalls()
local prepare, suspend, pack = sched.prepare, sched.suspend, sched.pack
local current_task = sched.task
local unpack = table.unpack or unpack
local getmetatable, type = getmetatable, type
local Request = core.request_mt

-- One completion function (and one cancel function) per task, made on
-- its first request: a task waits for one request at a time, and an
-- abandoned request never calls back, so whatever calls it is the
-- request the task waits for.
local function completion(task)
  local fn = function(...)
    task.request_res = pack(...)
    task.sched:wake(task, task.request_token)
  end
  task.request_cb = fn
  task.request_cancel = function()
    local req = task.request
    task.request = nil
    if req then req:cancel() end
  end
  return fn
end

--- Starts a request and waits for it: `start(cb, ...)` calls the C
--- function with the completion `cb` and returns what it returned. A
--- request object (core.request_mt's, or, for a transport written in
--- Lua, a table whose cancel() guarantees that cb is never called after
--- it) is waited for and its results are returned; anything else
--- (true: done at once; nil, msg, code: failed to start) is returned as
--- it is, so an operation done at once succeeds
--- even in a cancelled task (a write in its cleanup, say); one that must
--- wait raises the cancellation there. `on_cancel()`, if given, runs when
--- the task is cancelled while it waits (after the request is
--- abandoned); `discard(results...)` gets results that arrived but that
--- the task, cancelled before it ran again, will never return (to close
--- a file that an open gave, say). `what` names the wait in errors.
---@param what string
---@param start fun(cb: function, ...): any
---@param on_cancel? fun()
---@param discard? fun(...)
---@return any ...
function M.await(what, start, on_cancel, discard, ...)
  local task = current_task(what)
  local cb = task.request_cb or completion(task)
  task.request_res = nil
  local req, msg, code = start(cb, ...)
  if getmetatable(req) ~= Request and not (type(req) == "table" and
    type(req.cancel) == "function") then
    return req, msg, code
  end
  if task.cancelled and task.shield == 0 then
    req:cancel()
    if on_cancel then on_cancel() end
  end
  local _, token = prepare(what) -- raises the cancellation, if any
  task.request_token = token
  if task.request_res == nil then
    task.request = req
    if on_cancel or discard then
      local ok, err = ypcall(suspend, task, function()
        task.request_cancel()
        if on_cancel then on_cancel() end
      end)
      task.request = nil
      if not ok then
        local res = task.request_res
        task.request_res = nil
        if res and discard then discard(unpack(res, 1, res.n)) end
        error(err, 0)
      end
    else
      suspend(task, task.request_cancel)
      task.request = nil
    end
  end
  local res = task.request_res
  task.request_res = nil
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

--- Closes an object fed by a C handle through a queue (`self.handle`,
--- `self.q`: a signal, a file watch): the handle stops, a waiting task
--- gets nil. Safe to call twice.
function M.close_handle(self)
  local handle = self.handle
  if handle then
    self.handle = nil
    handle:close()
    self.q:close()
  end
end

return M
