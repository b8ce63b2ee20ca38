--- synchro.aio.thread: run a blocking Lua function on a worker thread, so
--- that it does not stall the loop (`aio.run_in_thread`).
---
--- Each loop has a pool of worker threads (4 by default, see `configure`),
--- each with its own Lua VM that has the loop VM's package.path and
--- package.cpath. The function crosses like a wrapped function: its code
--- and upvalues are copied (globals are the worker's own); arguments and
--- results are copied like a call's. A worker keeps the functions it has
--- decoded, keyed by their code and upvalue values, so calling the same
--- function again does not reload it.
local core = require "synchro.core"
local sched = require "synchro.sched"

local M = {}

local unpack = table.unpack or unpack
local SHORT_FRAMES = 6

--- The worker's traceback, in the style of the loop's remote tracebacks.
local function format_traceback(tb)
  if type(tb) ~= "string" or tb == "" then return "" end
  local full = os.getenv("SYNCHRO_TRACEBACK") == "full"
  local lines = {}
  for line in tb:gmatch("[^\n]+") do
    if line ~= "stack traceback:" and
      (full or not line:find("^%s*%[C%]: in %?$")) then
      lines[#lines + 1] = line
    end
  end
  if not full and #lines > SHORT_FRAMES then
    local n = #lines
    for i = n, SHORT_FRAMES + 1, -1 do lines[i] = nil end
    lines[#lines + 1] = ("\t(%d more; SYNCHRO_TRACEBACK=full shows all)")
      :format(n - SHORT_FRAMES)
  end
  if #lines == 0 then return "" end
  return "[worker thread] stack traceback:\n" .. table.concat(lines, "\n")
end

local function pack(...) return { n = select("#", ...), ... } end

--- Runs `fn(...)` on a worker thread and waits (without blocking the loop)
--- for its results. An error raised by `fn` is raised here (a string gets
--- the worker's traceback appended). A cancelled task stops waiting at
--- once if `fn` has not started yet; a running `fn` cannot be interrupted,
--- so the task waits for it to end, then raises the cancellation.
---@param fn fun(...): ...
---@return ...
function M.run_in_thread(fn, ...)
  if type(fn) ~= "function" then
    error("bad argument #1 to 'run_in_thread' (function expected, got " ..
      type(fn) .. ")", 2)
  end
  local task, token = sched.prepare("aio.run_in_thread")
  local outcome
  local id = core.workers_submit(fn, function(...)
    outcome = pack(...)
    task.sched:wake(task, token)
  end, ...)
  sched.suspend(task, function()
    -- not started: dropped, stop waiting; else wait for it to end
    return not core.workers_cancel(id)
  end)
  if outcome[1] then return unpack(outcome, 2, outcome.n) end
  local err, tb = outcome[2], format_traceback(outcome[3])
  if type(err) == "string" and tb ~= "" then err = err .. "\n" .. tb end
  error(err, 0)
end

--- Sets the pool's options for the current loop: `workers` (>= 1), the
--- most worker threads that run at once (default 4).
---@param opts { workers: integer? }
function M.configure(opts)
  if type(opts) ~= "table" then
    error("bad argument #1 to 'configure' (table expected, got " ..
      type(opts) .. ")", 2)
  end
  require("synchro.check").opts(opts, 1, "configure", { "workers" })
  local n = opts.workers
  if n ~= nil then
    if type(n) ~= "number" or n < 1 or n ~= math.floor(n) then
      error("bad argument #1 to 'configure' (workers must be an integer " ..
        ">= 1)", 2)
    end
    core.workers_configure(n)
  end
end

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
function M.stats()
  return core.workers_stats()
end

return M
