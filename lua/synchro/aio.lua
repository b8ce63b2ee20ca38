--- synchro.aio: what async code (a task on a synchronizer's loop, or
--- inside synchro.run) uses to wait, sleep and run things concurrently.
local core = require "synchro.core"
local sched = require "synchro.sched"

local check_time = require("synchro.check").time

local aio = {}

--- The error a cancelled task receives at its wait points.
aio.Cancelled = sched.Cancelled

--- Sleeps `seconds` without blocking other tasks.
---@param seconds number
function aio.sleep(seconds)
  if type(seconds) ~= "number" then
    error("bad argument #1 to 'sleep' (number expected, got " ..
      type(seconds) .. ")", 2)
  end
  -- the one time rule; no limit sleeps until cancelled
  return sched.sleep(check_time(seconds, 1, "sleep"))
end

--- Monotonic time in seconds (a float).
---@return number
aio.now = core.now

local function check_function(fn, n, name)
  if type(fn) ~= "function" then
    error(("bad argument #%d to '%s' (function expected, got %s)")
      :format(n, name, type(fn)), 3)
  end
end

--- Runs `fn(...)` as a new task of the current scheduler, a child of the
--- current task: cancelling the current task cancels it too, and the
--- current task's cancellation completes only once it has ended. If the
--- current task ends without being cancelled, the child goes on.
---@param fn async fun(...): ...
---@return synchro.Task
function aio.spawn(fn, ...)
  check_function(fn, 1, "spawn")
  local me = sched.task("aio.spawn")
  return me.sched:spawn_child(me, fn, ...)
end

--- Runs `fn(...)` as a new task that belongs to no other: cancelling the
--- current task leaves it running.
---@param fn async fun(...): ...
---@return synchro.Task
function aio.spawn_detached(fn, ...)
  check_function(fn, 1, "spawn_detached")
  return sched.task("aio.spawn_detached").sched:spawn(fn, ...)
end

---@class synchro.aio.Group
---@field spawn fun(self: synchro.aio.Group, fn: async fun(...): ..., ...): synchro.Task
---@field cancel fun(self: synchro.aio.Group)

--- A nursery: runs `body(group, ...)` as a task and returns its results
--- once every task of the group has ended (`group:spawn(fn, ...)` adds
--- one, `group:cancel()` cancels them all). The first error, of `body` or
--- of a task, cancels the others, waits for their cleanup, and is raised.
---@param body async fun(group: synchro.aio.Group, ...): ...
---@return ...
function aio.group(body, ...)
  check_function(body, 1, "group")
  return sched.group(body, ...)
end

--- Runs `fn(...)` so that a cancellation of the current task does not
--- interrupt it: for cleanup that must itself wait.
---@param fn async fun(...): ...
function aio.shield(fn, ...)
  check_function(fn, 1, "shield")
  return sched.shield(fn, ...)
end

--- Runs `body(...)`, then `cleanup(err)` inside a shield (`err` is nil
--- when `body` returned), then returns `body`'s results or raises its
--- error. The cleanup runs, and may await (delete a partial file, say),
--- even when the task was cancelled or timed out meanwhile.
---@param body async fun(...): ...
---@param cleanup async fun(err: any)
---@return ...
function aio.finally(body, cleanup, ...)
  check_function(body, 1, "finally")
  check_function(cleanup, 2, "finally")
  return sched.finally(body, cleanup, ...)
end

--- Waits for a task or a future; returns its results or raises its error.
---@param x synchro.Task|synchro.Future
function aio.await(x)
  if getmetatable(x) == sched.Task then return x:join() end
  if type(x) == "userdata" and x.key then return sched.await_future(x) end
  error("bad argument #1 to 'await' (task or future expected, got " ..
    type(x) .. ")", 2)
end

local function awaitable(x)
  return type(x) == "function" or getmetatable(x) == sched.Task or
    (type(x) == "userdata" and x.key ~= nil)
end

--- Turns gather/race arguments into tasks: functions run as new tasks,
--- tasks stay, futures are awaited by a new task. Every argument is
--- checked before anything starts (skip: arguments before these, for the
--- numbers in messages).
local function to_tasks(name, skip, ...)
  local me = sched.task("aio." .. name)
  local n = select("#", ...)
  for i = 1, n do
    local x = select(i, ...)
    if not awaitable(x) then
      error(("bad argument #%d to '%s' (function, task or future " ..
        "expected, got %s)"):format(i + skip, name, type(x)), 3)
    end
  end
  local tasks = {}
  for i = 1, n do
    local x = select(i, ...)
    if type(x) == "function" then
      tasks[i] = me.sched:spawn_child(me, x)
    elseif getmetatable(x) == sched.Task then
      tasks[i] = x
    else
      tasks[i] = me.sched:spawn_child(me, sched.await_future, x)
    end
  end
  return tasks
end

local gather_options = { return_errors = true }

--- Runs everything concurrently and returns the first result of each, in
--- order. The first error cancels the others, waits for their cleanup and
--- is raised. A first argument that is a plain table (no metatable) holds
--- options: with `{ return_errors = true }` nothing is cancelled and the
--- slot of a failed item holds its error value instead.
---@param ... table|(async fun(): any)|synchro.Task|synchro.Future
---@return ...
function aio.gather(...)
  local opts, skip = {}, 0
  local x = ...
  if type(x) == "table" and getmetatable(x) == nil then
    for k in pairs(x) do
      if not gather_options[k] then
        error(("bad argument #1 to 'gather' (unknown option '%s')")
          :format(tostring(k)), 2)
      end
    end
    opts, skip = x, 1
  end
  return sched.gather_tasks(to_tasks("gather", skip, select(skip + 1, ...)),
    opts)
end

--- Runs everything concurrently; the first to finish wins: its results are
--- returned (or its error raised) once the others are cancelled.
---@param ... (async fun(): any)|synchro.Task|synchro.Future
---@return ...
function aio.race(...)
  return sched.race_tasks(to_tasks("race", 0, ...))
end

--- Runs `fn(...)` in a child task with a time limit; on expiry the child is
--- cancelled, its cleanup finishes, and the result is
--- `nil, "ETIMEDOUT: ...", "ETIMEDOUT"`.
---@param seconds number
---@param fn async fun(...): ...
function aio.timeout(seconds, fn, ...)
  if type(seconds) ~= "number" then
    error("bad argument #1 to 'timeout' (number expected, got " ..
      type(seconds) .. ")", 2)
  end
  check_function(fn, 2, "timeout")
  seconds = check_time(seconds, 1, "timeout")
  if seconds == nil then return fn(...) end -- no limit
  return sched.timeout(seconds, fn, ...)
end

--- The running task, or nil outside async code.
---@return synchro.Task|nil
function aio.current()
  if sched.in_task() then return sched.current_task() end
  return nil
end

-- The I/O modules load on first use: aio.fs, aio.tcp, aio.udp, aio.dns,
-- aio.process, aio.pg, aio.stream, aio.tls. Tasks' synchronization (channel,
-- event, semaphore, lock, interval) comes from synchro.aio.sync.
-- aio.poll is a function of synchro.aio.poll, loaded on first use too.
local lazy = { fs = true, tcp = true, udp = true, dns = true, process = true,
  pg = true, poll = "poll", http = true, stream = true, tls = true }
setmetatable(aio, {
  __index = function(t, k)
    if lazy[k] then
      local m = require("synchro.aio." .. k)
      if type(lazy[k]) == "string" then m = m[lazy[k]] end
      rawset(t, k, m)
      return m
    end
  end,
})
for k, v in pairs(require "synchro.aio.sync") do aio[k] = v end

--- True when err is a cancellation error of synchro (see
--- synchro.is_cancelled).
---@param err any
---@return boolean
aio.is_cancelled = sched.is_cancelled

--- A read-only stream on fd 0 (see synchro.aio.stream.stdin).
---@return synchro.aio.Stream|synchro.aio.Tty|nil
---@return string|nil message
---@return string|nil code
function aio.stdin() return require("synchro.aio.stream").stdin() end

aio.run_in_thread = require("synchro.aio.thread").run_in_thread
aio.iter_in_thread = require("synchro.aio.thread").iter_in_thread

--- Watches a signal: see synchro.aio.signal.
aio.signal = require("synchro.aio.signal").signal

return aio
