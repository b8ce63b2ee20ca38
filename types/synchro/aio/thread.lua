---@meta synchro.aio.thread

---@class synchro.aio.thread
local M = {}

--- Runs `fn(...)` on a worker thread and waits (without blocking the loop)
--- for its results. An error raised by `fn` is raised here (a string gets
--- the worker's traceback appended). A cancelled task stops waiting at
--- once if `fn` has not started yet; a running `fn` cannot be interrupted,
--- so the task waits for it to end, then raises the cancellation.
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

return M
