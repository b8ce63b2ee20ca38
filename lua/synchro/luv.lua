--- synchro.luv: await synchro calls from coroutines driven by a luv loop
--- (Neovim's vim.loop, or `require "luv"`), without blocking that loop.
---
--- `synchro.luv.run(fn, ...)` starts `fn` as such a coroutine. Inside it,
--- `f.aio(...)`, a plain `f(...)` and `future:result()` suspend the
--- coroutine; a `uv.new_poll` on the future's pollfd resumes it, on the luv
--- loop's thread, when the call is done.
local synchro = require "synchro"

local M = {}

local core = require "synchro.core"
local sched = require "synchro.sched"

local uv -- the luv module in use
local schedule -- runs a function where the host allows its API (Neovim)
local unpack = table.unpack or unpack

--- Uses this luv module (e.g. `vim.loop`); the default is `require "luv"`.
--- `opts.schedule(fn)` runs fn later where the host's API may be used
--- (inside Neovim the default is `vim.schedule`; `false` runs tasks right
--- in the luv callbacks).
---@param luv table
---@param opts? {schedule?: fun(fn: function)|false}
function M.use(luv, opts)
  if type(luv) ~= "table" or type(luv.new_poll) ~= "function" then
    error("bad argument #1 to 'use' (luv module expected)", 2)
  end
  opts = require("synchro.check").opts(opts, 2, "use", { "schedule" })
  if opts.schedule ~= nil and opts.schedule ~= false and
    type(opts.schedule) ~= "function" then
    error("bad argument #2 to 'use' (schedule: function or false " ..
      "expected, got " .. type(opts.schedule) .. ")", 2)
  end
  uv = luv
  if opts.schedule ~= nil then schedule = opts.schedule or nil end
end

local function get_uv()
  if uv == nil then
    local vim = rawget(_G, "vim")
    uv = vim and vim.loop or require "luv"
    if schedule == nil and vim and type(vim.schedule) == "function" then
      schedule = vim.schedule
    end
  end
  return uv
end

-- Runs fn now, or through schedule (where the editor's API is allowed).
local function dispatch(fn)
  if schedule then schedule(fn) else fn() end
end

-- The scheduler of the luv coroutines: synchro's own (so that every
-- synchro.aio primitive works in them), its timers luv timers, its tasks
-- resumed from luv callbacks (through schedule, when set).
local loop_sched

local Timer = {}
Timer.__index = Timer
function Timer:start(seconds)
  -- from now, not from the loop's cached time; in whole milliseconds,
  -- never early
  uv.update_time()
  self.handle:start(math.ceil(math.max(seconds, 0) * 1000), 0, self.fire)
end
function Timer:stop() self.handle:stop() end
function Timer:close()
  if not self.handle:is_closing() then self.handle:close() end
end

local function new_timer(fn)
  return setmetatable({ handle = get_uv().new_timer(),
    fire = function() dispatch(fn) end }, Timer)
end

-- Awaits fut from a luv task: a uv poll on its fd wakes the task. A
-- cancelled task cancels the call and still waits for its cleanup.
local function await(fut)
  if not fut:done() then
    local task, token = sched.prepare("await")
    local poll = get_uv().new_poll(fut:pollfd())
    poll:start("r", function()
      poll:stop()
      poll:close()
      dispatch(function() loop_sched:wake(task, token) end)
    end)
    sched.suspend(task, function()
      fut:cancel()
      return true -- woken by the poll once the call has ended
    end)
  end
  return fut:outcome()
end

local function get_sched()
  if loop_sched == nil then
    get_uv()
    loop_sched = sched.new({ timer = new_timer, now = core.now,
      await = await })
  end
  return loop_sched
end

---@class synchro.LuvTask
---@field done boolean
---@field ok boolean|nil
---@field error any
---@field results table|nil
local Task = {}
Task.__index = Task

local function finish(task, ok, ...)
  task.done = true
  task.ok = ok
  if ok then
    task.results = { n = select("#", ...), ... }
  else
    local err = ...
    local tb = task.task.traceback
    if type(err) == "string" and tb then err = err .. "\n" .. tb end
    task.error = err
  end
  if task.on_done then
    task.on_done(task)
  elseif not ok then
    io.stderr:write("synchro.luv: task failed: ", tostring(task.error), "\n")
  end
end

-- Callbacks passed by this loop's coroutines run here, on the luv loop:
-- while such a call waits, a poll on the VM's inbox serves them, each as a
-- task of its own (so it may await too), where the host's API is allowed.
local serving, inbox_poll = 0, nil

local function serve_inbox()
  local _, calls = core.inbox():take()
  local run = debug.getregistry()["synchro.run_callback"]
  for i = 1, #calls do
    local rcall = calls[i]
    dispatch(function()
      M.run_opts({ on_done = function() end }, function()
        core.rreply(rcall, run(core.rargs(rcall)))
      end)
    end)
  end
end

synchro._callback_servers[await] = {
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
  if loop_sched ~= nil and sched.in_task() and
    sched.current_task().sched == loop_sched then
    return await
  end
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
  if type(opts) ~= "table" then
    error("bad argument #1 to 'run_opts' (table expected, got " ..
      type(opts) .. ")", 2)
  end
  require("synchro.check").opts(opts, 1, "run_opts", { "on_done" })
  local s = get_sched()
  local task = setmetatable({ done = false, on_done = opts.on_done }, Task)
  task.task = s:spawn(fn, ...)
  task.task.on_done = function(_, ok, ...) finish(task, ok, ...) end
  s:run_ready()
  return task
end

--- Cancels the task: the synchro call it awaits is cancelled, its remote
--- cleanup runs, then the task gets an ECANCELED error at its wait (and
--- its children, spawned with aio.spawn, are cancelled with it).
function Task:cancel()
  if self.done then return false end
  return loop_sched:cancel(self.task)
end

--- The task's results (after it is done), or raises its error.
function Task:result()
  if not self.done then error("the luv task has not finished", 2) end
  if not self.ok then error(self.error, 0) end
  return unpack(self.results, 1, self.results.n)
end

return M
