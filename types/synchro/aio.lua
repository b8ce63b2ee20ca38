---@meta synchro.aio

--- What async code uses (a task on a synchronizer's loop, or inside
--- `synchro.run`). The I/O modules load on first use.
---@class synchro.aio
---@field fs synchro.aio.fs files (loaded on first use)
---@field tcp synchro.aio.tcp TCP streams and servers (loaded on first use)
---@field udp synchro.aio.udp UDP sockets (loaded on first use)
---@field dns synchro.aio.dns lookups (loaded on first use)
---@field process synchro.aio.process child processes (loaded on first use)
local aio = {}

--- The error a cancelled task receives at its wait points.
aio.Cancelled = {}

--- Sleeps `seconds` without blocking other tasks.
---@async
---@param seconds number
function aio.sleep(seconds) end

--- Monotonic time in seconds (a float).
---@return number
function aio.now() end

--- Runs `fn(...)` as a new task of the current scheduler, a child of the
--- current task: cancelling the current task cancels it too, and the
--- current task's cancellation completes only once it has ended. If the
--- current task ends without being cancelled, the child goes on.
---@param fn async fun(...): ...
---@return synchro.Task
function aio.spawn(fn, ...) end

--- Runs `fn(...)` as a new task that belongs to no other: cancelling the
--- current task leaves it running.
---@param fn async fun(...): ...
---@return synchro.Task
function aio.spawn_detached(fn, ...) end

---@class synchro.aio.Group
local Group = {}

--- Starts `fn(...)` as a task of the group (a child of the group's task).
---@param fn async fun(...): ...
---@return synchro.Task
function Group:spawn(fn, ...) end

--- Cancels every task of the group (and those it starts from now on).
function Group:cancel() end

--- A nursery: runs `body(group, ...)` as a task and returns its results
--- once every task of the group has ended. The first error, of `body` or
--- of a task, cancels the others, waits for their cleanup, and is raised.
---@async
---@param body async fun(group: synchro.aio.Group, ...): ...
---@return ...
function aio.group(body, ...) end

--- Runs `fn(...)` so that a cancellation of the current task does not
--- interrupt it: for cleanup that must itself wait.
---@async
---@param fn async fun(...): ...
---@return ...
function aio.shield(fn, ...) end

--- Runs `body(...)`, then `cleanup(err)` inside a shield (`err` is nil
--- when `body` returned), then returns `body`'s results or raises its
--- error. The cleanup runs, and may await (delete a partial file, say),
--- even when the task was cancelled or timed out meanwhile.
---@async
---@param body async fun(...): ...
---@param cleanup async fun(err: any)
---@return ...
function aio.finally(body, cleanup, ...) end

--- Watches a signal ("sigterm", "SIGHUP", "int", or a number): the
--- watcher's `:wait([timeout])` awaits the next delivery. See
--- synchro.aio.signal.
---@param sig string|integer
---@return synchro.aio.Signal|nil
---@return string|nil message
---@return string|nil code
function aio.signal(sig) end

--- A read-only stream on fd 0 (a pipe, a file or a TTY; the same one on
--- every call): see synchro.aio.stream.stdin.
---@return synchro.aio.Stream|synchro.aio.Tty|nil
---@return string|nil message
---@return string|nil code
function aio.stdin() end

--- Waits for a task or a future; returns its results or raises its error.
---@async
---@param x synchro.Task|synchro.Future
---@return ...
function aio.await(x) end

--- Runs everything concurrently and returns the first result of each, in
--- order. The first error cancels the others, waits for their cleanup and
--- is raised. A first argument that is a plain table (no metatable) holds
--- options: with `{ return_errors = true }` nothing is cancelled and the
--- slot of a failed item holds its error value instead.
---@param ... table|(async fun(): any)|synchro.Task|synchro.Future
---@return ...
function aio.gather(...) end

--- Runs everything concurrently; the first to finish wins: its results are
--- returned (or its error raised) once the others are cancelled.
---@param ... (async fun(): any)|synchro.Task|synchro.Future
---@return ...
function aio.race(...) end

--- Runs `fn(...)` in a child task with a time limit; on expiry the child is
--- cancelled, its cleanup finishes, and the result is
--- `nil, "ETIMEDOUT: ...", "ETIMEDOUT"`.
---@param seconds number
---@async
---@param fn async fun(...): ...
---@return ...
function aio.timeout(seconds, fn, ...) end

--- The running task, or nil outside async code.
---@return synchro.Task|nil
function aio.current() end

--- True when err is the cancellation error.
---@param err any
---@return boolean
function aio.is_cancelled(err) end

--- A channel (see synchro.aio.sync).
---@param capacity? integer
---@return synchro.Channel
function aio.channel(capacity) end

--- An event (see synchro.aio.sync).
---@return synchro.Event
function aio.event() end

--- A semaphore (see synchro.aio.sync).
---@param n? integer
---@param max? integer
---@return synchro.Semaphore
function aio.semaphore(n, max) end

--- A lock (see synchro.aio.sync).
---@return synchro.Lock
function aio.lock() end

--- A ticker every `seconds` (see synchro.aio.sync).
---@param seconds number
---@return synchro.Interval
function aio.interval(seconds) end

--- Runs a blocking `fn(...)` on a worker thread and awaits its results
--- (see synchro.aio.thread).
---@async
---@param fn fun(...): ...
---@param ... any
---@return ...
function aio.run_in_thread(fn, ...) end

--- Iterates a blocking generator run on a worker thread (see
--- synchro.aio.thread).
---@param opts_or_fn {buffer?: integer}|fun(...)
---@param ... any
---@return synchro.aio.ThreadIterator
function aio.iter_in_thread(opts_or_fn, ...) end

return aio
