---@meta synchro.aio.sync

---@class synchro.aio.sync
local M = {}

---@class synchro.Channel
local Channel = {}

--- A channel between tasks. `capacity` 0 (the default) makes a rendezvous
--- channel: send waits until a receiver takes the value; `n > 0` buffers up
--- to n values; `math.huge` never makes senders wait.
---@param capacity? integer
---@return synchro.Channel
function M.channel(capacity) end

--- Sends v (not nil). Waits while the buffer is full (for a rendezvous
--- channel: until a receiver takes v). Returns true, or
--- `nil, "ECLOSED: channel is closed", "ECLOSED"` if the channel is closed
--- (before or while waiting: then v was not delivered).
---@param v any
---@return true|nil ok
---@return string? err
---@return string? code
function Channel:send(v) end

--- Receives the next value, waiting while there is none. Returns
--- `value, true`, or `nil, false` once the channel is closed and drained.
---@return any value
---@return boolean ok
function Channel:recv() end

--- Closes the channel: waiting and later senders get ECLOSED; receivers
--- get the values still buffered, then `nil, false`. Idempotent.
function Channel:close() end

--- Whether close() was called.
---@return boolean
function Channel:is_closed() end

--- The number of values buffered (sent, not yet received).
---@return integer
function Channel:len() end

--- An iterator over received values, ending when the channel is closed
--- and drained: `for v in ch:iter() do ... end`. (PUC Lua 5.1 cannot wait
--- inside a for iterator: loop over ch:recv() there.)
---@return fun(): any
function Channel:iter() end

---@class synchro.Event
local Event = {}

--- An event: tasks wait until it is set.
---@return synchro.Event
function M.event() end

--- Sets the event and wakes every waiting task.
function Event:set() end

--- Unsets the event: later waits wait again.
function Event:clear() end

---@return boolean
function Event:is_set() end

--- Waits until the event is set (returns at once if it is); returns true.
---@return true
function Event:wait() end

---@class synchro.Semaphore
local Semaphore = {}

--- A semaphore with n free permits (default 1). Waiters get permits in
--- the order they asked for them. With `max`, a release that would make
--- more than max permits free raises (a bounded semaphore).
---@param n? integer
---@param max? integer
---@return synchro.Semaphore
function M.semaphore(n, max) end

--- Takes a permit, waiting until one is free. Returns true.
---@return true
function Semaphore:acquire() end

--- Gives a permit back (to the first waiter, if any). On a bounded
--- semaphore, a release beyond max free permits raises.
function Semaphore:release() end

--- The number of free permits.
---@return integer
function Semaphore:value() end

--- Runs fn(...) holding a permit; releases it however fn ends, and
--- returns fn's results (or raises its error).
---@param fn async fun(...): ...
---@return ...
function Semaphore:with(fn, ...) end

---@class synchro.Lock
local Lock = {}

--- A mutual-exclusion lock owned by the task that acquired it; not
--- reentrant. Waiters get it in the order they asked.
---@return synchro.Lock
function M.lock() end

--- Acquires the lock, waiting while another task holds it. Returns true.
---@return true
function Lock:acquire() end

--- Releases the lock (to the first waiter, if any). Only the task that
--- holds it may release it.
function Lock:release() end

--- Whether some task holds the lock.
---@return boolean
function Lock:locked() end

--- Runs fn(...) holding the lock; releases it however fn ends, and
--- returns fn's results (or raises its error).
---@param fn async fun(...): ...
---@return ...
function Lock:with(fn, ...) end

---@class synchro.Interval
local Interval = {}

--- A drift-free periodic ticker: tick number k is due at start + k *
--- seconds, where start is when interval() was called.
---@param seconds number
---@return synchro.Interval
function M.interval(seconds) end

--- Waits for the next tick and returns its number (1, 2, ...). Ticks
--- missed because the caller was late are skipped, not made up: the
--- number then jumps. Returns nil once stop() was called (also to a task
--- waiting in tick()), so `for k in iv.tick, iv do ... end` works (not on
--- PUC Lua 5.1, which cannot wait inside a for iterator).
---@return integer|nil
function Interval:tick() end

--- Stops the interval: tick() returns nil from now on, and tasks waiting
--- in tick() return nil at once.
function Interval:stop() end

return M
