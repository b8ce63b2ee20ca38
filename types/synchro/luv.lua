---@meta synchro.luv

---@class synchro.luv
local M = {}

--- Uses this luv module (e.g. `vim.loop`); the default is `require "luv"`.
--- `opts.schedule(fn)` runs fn later where the host's API may be used
--- (inside Neovim the default is `vim.schedule`; `false` runs tasks right
--- in the luv callbacks).
---@param luv table
---@param opts? {schedule?: fun(fn: function)|false}
function M.use(luv, opts) end

---@class synchro.LuvTask
---@field done boolean
---@field ok boolean|nil
---@field error any
local Task = {}

--- Runs `fn(...)` as a coroutine whose synchro calls await on the luv loop.
--- It starts at once and goes on from luv callbacks. `opts.on_done(task)`
--- is called when it ends (else an error is written to stderr).
---@param fn async fun(...): ...
---@return synchro.LuvTask
function M.run(fn, ...) end

--- Like run, with options first: `{ on_done = function(task) end }`.
---@param opts {on_done?: fun(task: synchro.LuvTask)}
---@param fn async fun(...): ...
---@return synchro.LuvTask
function M.run_opts(opts, fn, ...) end

--- Cancels the task: the synchro call it awaits is cancelled, its remote
--- cleanup runs, then the task gets an ECANCELED error.
function Task:cancel() end

--- The task's results (after it is done), or raises its error.
function Task:result() end

return M
