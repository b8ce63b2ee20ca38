---@meta synchro.aio.thread

---@class synchro.aio.thread
local M = {}

--- Runs `fn(...)` on a worker thread and waits (without blocking the loop)
--- for its results. An error raised by `fn` is raised here (a string gets
--- the worker's traceback appended). A cancelled task stops waiting at
--- once if `fn` has not started yet; a running `fn` is interrupted (the
--- worker raises `ECANCELED` inside it, so its `pcall` cleanup runs), and
--- the task waits for it to end, then raises the cancellation. Outside a
--- loop's task it is `synchro.to_thread`.
---@async
---@param fn fun(...): ...
---@return ...
function M.run_in_thread(fn, ...) end

--- Sets the pool's options for the current loop: `workers` (>= 1), the
--- most worker threads that run at once (default 4).
---@param opts { workers: integer? }
function M.configure(opts) end

---@class synchro.aio.ThreadStats
---@field workers integer
---@field idle integer
---@field busy integer
---@field queued integer
---@field max integer
---@field vms integer

--- The pool's state, for tests and debugging: `workers` (threads alive),
--- `idle`, `busy`, `queued` (jobs waiting for a worker), `max`, and `vms`
--- (worker VMs created so far).
---@return synchro.aio.ThreadStats
function M.stats() end

---@class synchro.aio.ThreadIterator
local Iter = {}

--- The next item (nil at the end); the same as calling the iterator (Lua
--- 5.1 cannot yield inside a `for` iterator: step with `it:next()` there).
---@async
---@return ...
function Iter:next() end

--- Stops the generator (its cleanup runs on the worker and is waited for);
--- later calls return nil.
---@async
function Iter:close() end

--- Runs the blocking generator `fn(...)` on a worker thread: each
--- `coroutine.yield(...)` inside it is an item, and the result iterates
--- them from async code (`for v in aio.iter_in_thread(fn) do`). At most
--- `opts.buffer` items (default 64) wait for the consumer; then the worker
--- waits (back pressure). `it:close()` (a `break` on Lua 5.4) or a
--- cancellation of the consuming task interrupts the generator and waits
--- for its cleanup. Outside a loop's task it is `synchro.iter_in_thread`.
---@param opts_or_fn {buffer?: integer}|fun(...)
---@param ... any
---@return synchro.aio.ThreadIterator
function M.iter_in_thread(opts_or_fn, ...) end

return M
