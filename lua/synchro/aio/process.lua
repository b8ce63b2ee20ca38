--- synchro.aio.process: child processes with pipes, for async code on a
--- synchronizer's loop.
---
--- `spawn` starts a child and returns a Process; `run` runs one to the end
--- and returns what it wrote. The pipes are synchro.aio.stream streams
--- (`read`, `read_line`, `read_all`, `lines`, `write`, `close`).
local core = require "synchro.core"
local sched = require "synchro.sched"

local M = {}


local arg_error = require("synchro.check").argerror

local function pack(...) return { n = select("#", ...), ... } end

-- Streams --------------------------------------------------------------------

-- A child's pipes are the one buffered stream (synchro.aio.stream):
-- stdin is write-only, stdout and stderr read-only.
local stream = require "synchro.aio.stream"
M.Stream = stream.Stream

local function new_stream(pipe, readable)
  return stream.new(pipe, nil, { readable = readable, writable = not readable })
end

-- Processes -----------------------------------------------------------------

--- A child process: `pid`, and `stdin`, `stdout`, `stderr` streams for
--- the stdio spawned with "pipe".
---@class synchro.aio.Process
---@field pid integer
---@field stdin synchro.aio.Stream|nil
---@field stdout synchro.aio.Stream|nil
---@field stderr synchro.aio.Stream|nil
local Process = {}
Process.__index = Process
M.Process = Process

---@class synchro.aio.SpawnOptions
---@field cwd string? the directory to start in
---@field env table<string, string|number>? replaces the environment
---@field env_add table<string, string|number>? extends the environment (or env)
---@field group boolean? the child leads its own process group (default true)
---@field kill_grace number? seconds between SIGTERM and SIGKILL (default 2)
---@field stdin "pipe"|"inherit"|"ignore"|nil (run: or the data to feed)
---@field stdout "pipe"|"inherit"|"ignore"|nil
---@field stderr "pipe"|"inherit"|"ignore"|nil

local STDIO = { pipe = true, inherit = true, ignore = true }
local OPTIONS = { cwd = true, env = true, env_add = true, stdin = true,
  stdout = true, stderr = true, group = true, kill_grace = true }
local KILL_GRACE = 2

local check_time = require("synchro.check").time

-- A table name -> value checked into the map vars (name -> string).
local function add_vars(vars, t, what, fname)
  if type(t) ~= "table" then
    arg_error(3, fname, what .. ": table expected, got " .. type(t), 4)
  end
  for k, v in pairs(t) do
    if type(k) ~= "string" or k:find("=", 1, true) or k == "" then
      arg_error(3, fname, what .. ": bad variable name " .. tostring(k), 4)
    end
    if type(v) == "number" then v = tostring(v) end
    if type(v) ~= "string" then
      arg_error(3, fname, ("%s.%s: string expected, got %s")
        :format(what, k, type(v)), 4)
    end
    vars[k] = v
  end
end

local function check_options(fname, cmd, args, opts)
  if type(cmd) ~= "string" then
    arg_error(1, fname, "string expected, got " .. type(cmd), 3)
  end
  local argv = {}
  if args ~= nil then
    if type(args) ~= "table" then
      arg_error(2, fname, "table expected, got " .. type(args), 3)
    end
    for i = 1, #args do
      local a = args[i]
      if type(a) == "number" then a = tostring(a) end
      if type(a) ~= "string" then
        arg_error(2, fname, ("args[%d]: string expected, got %s")
          :format(i, type(a)), 3)
      end
      argv[i] = a
    end
  end
  opts = opts or {}
  if type(opts) ~= "table" then
    arg_error(3, fname, "table expected, got " .. type(opts), 3)
  end
  for k in pairs(opts) do
    if not OPTIONS[k] then
      arg_error(3, fname, "unknown option '" .. tostring(k) .. "'", 3)
    end
  end
  if opts.cwd ~= nil and type(opts.cwd) ~= "string" then
    arg_error(3, fname, "cwd: string expected, got " .. type(opts.cwd), 3)
  end
  -- env replaces the environment, env_add extends it (or env, if both)
  local env
  if opts.env ~= nil or opts.env_add ~= nil then
    local vars = {}
    if opts.env ~= nil then
      add_vars(vars, opts.env, "env", fname)
    else
      for _, kv in ipairs(core.environ()) do
        local k, v = kv:match("^([^=]+)=(.*)$")
        if k then vars[k] = v end
      end
    end
    if opts.env_add ~= nil then add_vars(vars, opts.env_add, "env_add", fname) end
    env = {}
    for k, v in pairs(vars) do env[#env + 1] = k .. "=" .. v end
    table.sort(env)
  end
  local group = true
  if opts.group ~= nil then
    if type(opts.group) ~= "boolean" then
      arg_error(3, fname, "group: boolean expected, got " ..
        type(opts.group), 3)
    end
    group = opts.group
  end
  local grace = KILL_GRACE
  if opts.kill_grace ~= nil then
    grace = check_time(opts.kill_grace, 3, fname, "kill_grace")
  end
  local stdio = {}
  for i, name in ipairs({ "stdin", "stdout", "stderr" }) do
    local mode = opts[name]
    if mode == nil then
      mode = "inherit"
    elseif not STDIO[mode] then
      arg_error(3, fname, ("%s: \"pipe\", \"inherit\" or \"ignore\" " ..
        "expected, got %s"):format(name, tostring(mode)), 3)
    end
    stdio[i] = mode
  end
  return cmd, argv, opts.cwd, env, stdio, group, grace
end

local function start(cmd, argv, cwd, env, stdio, group, grace)
  local proc = { waiters = {}, group = group, kill_grace = grace }
  local handle, pid, stdin, stdout, stderr = core.spawn(cmd, argv, cwd, env,
    stdio, function(status, signal)
      -- A child killed by signal n reports 128 + n, as the shell does.
      if signal ~= 0 then
        proc.code, proc.signal = 128 + signal, signal
      else
        proc.code = status
      end
      local waiters = proc.waiters
      proc.waiters = {}
      for w in pairs(waiters) do w() end
    end, group)
  if not handle then
    local msg, name = pid, stdin
    return nil, msg, name
  end
  proc.handle = handle
  proc.pid = pid
  proc.stdin = stdin and new_stream(stdin, false)
  proc.stdout = stdout and new_stream(stdout, true)
  proc.stderr = stderr and new_stream(stderr, true)
  return setmetatable(proc, Process)
end

--- Starts `cmd` (looked up in PATH) with the arguments `args`. Options:
--- `cwd`; `env`, a table name -> value that replaces the environment;
--- `env_add`, a table name -> value added to the inherited environment
--- (to `env` when both are given); `group` (default true): the child
--- leads a new process group (and session: it has no controlling
--- terminal), so kill(), terminate() and close() reach every process it
--- started; `kill_grace`: seconds terminate() waits between SIGTERM and
--- SIGKILL (default 2);
--- `stdin`, `stdout`, `stderr`: "pipe" (a stream on the Process),
--- "inherit" (the default: this process's own) or "ignore" (/dev/null).
--- Returns the Process, or nil, message, name (e.g. ENOENT).
---@param cmd string
---@param args string[]?
---@param opts synchro.aio.SpawnOptions?
---@return synchro.aio.Process|nil
---@return string? message
---@return string? name
function M.spawn(cmd, args, opts)
  return start(check_options("spawn", cmd, args, opts))
end

--- Waits for the child to exit; returns its exit code (128 + n when
--- signal n killed it) and the signal number (nil if none). Any number of
--- tasks may wait; a cancelled wait leaves the child running.
---@return integer code
---@return integer|nil signal
function Process:wait()
  if self.code == nil then
    local task, token = sched.prepare("wait")
    local waiters = self.waiters
    local function wake() task.sched:wake(task, token) end
    waiters[wake] = true
    sched.suspend(task, function() waiters[wake] = nil end)
  end
  return self.code, self.signal
end

local function signal_number(sig)
  if sig == nil then return core.signals.SIGTERM end
  if type(sig) == "number" then
    if sig ~= math.floor(sig) or sig < 0 then return nil end
    return sig
  end
  if type(sig) == "string" then
    -- one table of names for kill() and aio.signal
    return (require("synchro.aio.signal").number(sig))
  end
end

--- Sends a signal (a name like "SIGKILL" or "KILL", or a number; default
--- "SIGTERM") to the child's process group (to the child alone if spawned
--- with `group = false`). Returns true, or nil, message, name (ESRCH once
--- no process is left to receive it).
---@param sig string|integer|nil
---@return true|nil ok
---@return string? message
---@return string? name
function Process:kill(sig)
  local num = signal_number(sig)
  if num == nil then
    arg_error(1, "kill", "unknown signal " .. tostring(sig))
  end
  if self.group then return self.handle:kill(num, true) end
  if self.code ~= nil then
    return nil, "ESRCH: no such process", "ESRCH"
  end
  return self.handle:kill(num)
end

--- Ends the child and its group: SIGTERM, then, unless the child exited
--- within `grace` seconds (default: the `kill_grace` option), SIGKILL to
--- whatever is left of the group. Waits for the child to exit; returns
--- its code and signal as wait() does. A cancellation of the calling
--- task does not interrupt it (it is cleanup, bounded by the grace).
---@param grace number?
---@return integer code
---@return integer|nil signal
function Process:terminate(grace)
  if getmetatable(self) ~= Process then
    arg_error(1, "terminate", "process expected, got " .. type(self))
  end
  if grace == nil then
    grace = self.kill_grace
  else
    grace = check_time(grace, 1, "terminate", "grace")
  end
  return sched.shield(function()
    local aio = require "synchro.aio"
    self:kill("SIGTERM")
    if self.code == nil then
      if grace == nil then
        self:wait()
      else
        aio.timeout(grace, self.wait, self)
      end
    end
    -- the rest of the group, and a child that ignored SIGTERM
    self:kill("SIGKILL")
    if self.code == nil and not self.group then
      self.handle:kill(core.signals.SIGKILL)
    end
    return self:wait()
  end)
end

--- Closes the pipes and, if the child still runs, kills it (and its
--- process group) with SIGKILL (call wait() first to let it finish, or
--- terminate() to give it a grace). Never waits; the child is
--- reaped when it exits. Safe to call twice.
function Process:close()
  if self.stdin then self.stdin:close() end
  if self.stdout then self.stdout:close() end
  if self.stderr then self.stderr:close() end
  if self.code == nil and not self.killed then
    self.killed = true
    if self.group then self.handle:kill(core.signals.SIGKILL, true) end
    self.handle:kill(core.signals.SIGKILL)
  end
end
Process.__close = Process.close

-- run ------------------------------------------------------------------------

local ypcall = sched.yieldable_pcalls()

--- Runs `cmd` to the end and returns what it wrote to stdout and stderr,
--- its exit code and the signal that killed it (or nil). Both pipes are
--- read concurrently, so a child that writes a lot to both cannot block.
--- Options as for spawn, except that `stdin` may be a string to feed to
--- the child (default: "ignore"), and stdout and stderr default to "pipe"
--- (with "inherit" or "ignore" the result is nil). If the task is
--- cancelled (or times out), the child and its process group are
--- terminated: SIGTERM, SIGKILL after `kill_grace`. `stdin` may also be
--- a function, called for chunks to write until it returns nil, while
--- the output is read. Returns nil, message, name if the
--- child cannot start.
---@param cmd string
---@param args string[]?
---@param opts synchro.aio.SpawnOptions?
---@return string|nil stdout
---@return string|nil stderr
---@return integer|nil code
---@return integer|nil signal
function M.run(cmd, args, opts)
  local o = opts
  if opts == nil or type(opts) == "table" then
    o = {}
    for k, v in pairs(opts or {}) do o[k] = v end
    local input = o.stdin
    if input ~= nil and input ~= "inherit" and input ~= "ignore" then
      if type(input) ~= "string" and type(input) ~= "function" then
        arg_error(3, "run", "stdin: string or function expected, got " ..
          type(input))
      end
      o.stdin = "pipe"
    end
    o.stdin = o.stdin or "ignore"
    o.stdout = o.stdout or "pipe"
    o.stderr = o.stderr or "pipe"
  end
  local _, argv, cwd, env, stdio, group, grace =
    check_options("run", cmd, args, o)
  local input = o.stdin == "pipe" and opts.stdin or nil
  local proc, msg, code = start(cmd, argv, cwd, env, stdio, group, grace)
  if not proc then return nil, msg, code end
  local r = pack(ypcall(function()
    local aio = require "synchro.aio"
    local function read(s)
      return function() return s and { s:read_all() } or {} end
    end
    local function feed()
      if proc.stdin then
        -- EPIPE if the child did not read it all: not an error here
        if type(input) == "function" then
          -- chunk by chunk, while the output is read
          while true do
            local chunk = input()
            if chunk == nil or chunk == "" then break end
            if not proc.stdin:write(chunk) then break end
          end
        elseif input ~= "" then
          proc.stdin:write(input)
        end
        proc.stdin:close()
      end
    end
    local out, err = aio.gather(read(proc.stdout), read(proc.stderr), feed)
    local c, s = proc:wait()
    if out[2] then return nil, out[2], out[3] end
    if err[2] then return nil, err[2], err[3] end
    return out[1], err[1], c, s
  end))
  -- cancelled, timed out or failed: end the child's whole group
  if not r[1] then proc:terminate() end
  proc:close()
  if not r[1] then error(r[2], 0) end
  return (table.unpack or unpack)(r, 2, r.n)
end

return M
