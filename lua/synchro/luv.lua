--- synchro.luv: await synchro calls from coroutines driven by a luv loop
--- (Neovim's vim.loop, or `require "luv"`), without blocking that loop.
---
--- `synchro.luv.run(fn, ...)` starts `fn` as such a coroutine. Inside it,
--- `f.aio(...)`, a plain `f(...)` and `future:result()` suspend the
--- coroutine; a `uv.new_poll` on the future's pollfd resumes it, on the luv
--- loop's thread, when the call is done.
local synchro = require "synchro"

local M = {}

local uv -- the luv module in use
local running = setmetatable({}, { __mode = "k" }) -- coroutine -> task
local co_running, co_resume, co_yield, co_status =
  coroutine.running, coroutine.resume, coroutine.yield, coroutine.status
local unpack = table.unpack or unpack

--- Uses this luv module (e.g. `vim.loop`); the default is `require "luv"`.
---@param luv table
function M.use(luv)
  if type(luv) ~= "table" or type(luv.new_poll) ~= "function" then
    error("bad argument #1 to 'use' (luv module expected)", 2)
  end
  uv = luv
end

local function get_uv()
  if uv == nil then
    local vim = rawget(_G, "vim")
    uv = vim and vim.loop or require "luv"
  end
  return uv
end

---@class synchro.LuvTask
---@field done boolean
---@field ok boolean|nil
---@field error any
local Task = {}
Task.__index = Task

local function finish(task, ok, ...)
  task.done = true
  task.ok = ok
  if ok then
    task.results = { n = select("#", ...), ... }
  else
    task.error = ...
  end
  if task.on_done then
    task.on_done(task)
  elseif not ok then
    io.stderr:write("synchro.luv: task failed: ", tostring(task.error), "\n")
  end
end

local function step(task, ...)
  local co = task.co
  if co_status(co) ~= "suspended" then return end
  local ok, err = co_resume(co, ...)
  if not ok then
    running[co] = nil
    finish(task, false, debug.traceback(co, err))
  elseif co_status(co) == "dead" then
    running[co] = nil
  end
end

-- Suspends the running luv coroutine until fut is done (never raises).
local function wait_done(fut)
  local task = running[co_running()]
  if not fut:done() then
    local poll = get_uv().new_poll(fut:pollfd())
    task.future = fut
    poll:start("r", function()
      poll:stop()
      poll:close()
      step(task)
    end)
    co_yield()
    task.future = nil
  end
end

local function await(fut)
  wait_done(fut)
  if running[co_running()].cancelled then
    -- the remote task has finished its cleanup by now
    error(require("synchro.sched").cancelled(
      "ECANCELED: the luv task was cancelled"), 0)
  end
  return fut:outcome()
end

-- Callbacks passed by this loop's coroutines run here, on the luv loop:
-- while such a call waits, a poll on the VM's inbox serves them, each in a
-- coroutine of its own (so it may await too).
local core = require "synchro.core"
local serving, inbox_poll = 0, nil

local function serve_inbox()
  local _, calls = core.inbox():take()
  local run = debug.getregistry()["synchro.run_callback"]
  for i = 1, #calls do
    local rcall = calls[i]
    M.run_opts({ on_done = function() end }, function()
      core.rreply(rcall, run(core.rargs(rcall)))
    end)
  end
end

synchro._callback_servers[await] = {
  wait = wait_done,
  enter = function()
    serving = serving + 1
    if serving == 1 then
      core.inbox_enter()
      inbox_poll = get_uv().new_poll(core.inbox():pollfd())
      inbox_poll:start("r", serve_inbox)
    end
  end,
  leave = function()
    serving = serving - 1
    if serving == 0 then
      inbox_poll:stop()
      inbox_poll:close()
      inbox_poll = nil
      core.inbox_leave()
    end
  end,
}

synchro.register_adapter(function()
  local co = co_running()
  if co ~= nil and running[co] ~= nil then return await end
  return nil
end)

--- Runs `fn(...)` as a coroutine whose synchro calls await on the luv loop.
--- It starts at once and goes on from luv callbacks. `opts.on_done(task)`
--- is called when it ends (else an error is written to stderr).
---@param fn async fun(...): ...
---@return synchro.LuvTask
function M.run(fn, ...)
  return M.run_opts({}, fn, ...)
end

--- Like run, with options first: `{ on_done = function(task) end }`.
---@param opts {on_done?: fun(task: synchro.LuvTask)}
---@param fn async fun(...): ...
---@return synchro.LuvTask
function M.run_opts(opts, fn, ...)
  if type(fn) ~= "function" then
    error("bad argument #1 to 'run' (function expected, got " .. type(fn) ..
      ")", 2)
  end
  get_uv()
  local task = setmetatable({ done = false, on_done = opts.on_done }, Task)
  local args = { n = select("#", ...), ... }
  task.co = coroutine.create(function()
    return finish(task, true, fn(unpack(args, 1, args.n)))
  end)
  running[task.co] = task
  step(task)
  return task
end

--- Cancels the task: the synchro call it awaits is cancelled, its remote
--- cleanup runs, then the task gets an ECANCELED error.
function Task:cancel()
  if self.done then return false end
  self.cancelled = true
  if self.future then self.future:cancel() end
  return true
end

--- The task's results (after it is done), or raises its error.
function Task:result()
  if not self.done then error("the luv task has not finished", 2) end
  if not self.ok then error(self.error, 0) end
  return unpack(self.results, 1, self.results.n)
end

return M
