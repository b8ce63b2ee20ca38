---@meta synchro.aio.process

---@class synchro.aio.process
---@field Process synchro.aio.Process the class of processes
---@field Stream synchro.aio.Stream the class of pipes
local M = {}

--- A pipe to or from a child: reads are buffered; a write waits until the
--- bytes are handed to the system.
---@class synchro.aio.Stream
local Stream = {}

--- Reads up to `n` bytes (default: whatever is buffered), waiting for at
--- least one. Returns nil at the end of the stream, or nil, message, name
--- on error.
---@param n integer?
---@return string|nil data
---@return string? message
---@return string? name
function Stream:read(n) end

--- Reads one line, without its "\n". At the end of the stream returns
--- the last, unterminated line if there is one, else nil.
---@return string|nil line
---@return string? message
---@return string? name
function Stream:read_line() end

--- Reads until the end of the stream; returns everything (maybe "").
---@return string|nil data
---@return string? message
---@return string? name
function Stream:read_all() end

--- Writes `data` and waits until it is handed to the system. Returns
--- true, or nil, message, name (EPIPE once the child closed its end).
---@param data string
---@return true|nil ok
---@return string? message
---@return string? name
function Stream:write(data) end

--- Closes the pipe (a child reading its stdin sees the end). Waiting
--- reads and writes return nil, "ECANCELED: ...", "ECANCELED". Safe to
--- call twice.
function Stream:close() end

--- A child process: `pid`, and `stdin`, `stdout`, `stderr` streams for
--- the stdio spawned with "pipe".
---@class synchro.aio.Process
---@field pid integer
---@field stdin synchro.aio.Stream|nil
---@field stdout synchro.aio.Stream|nil
---@field stderr synchro.aio.Stream|nil
local Process = {}

---@class synchro.aio.SpawnOptions
---@field cwd string? the directory to start in
---@field env table<string, string|number>? replaces the environment
---@field stdin "pipe"|"inherit"|"ignore"|nil (run: or the data to feed)
---@field stdout "pipe"|"inherit"|"ignore"|nil
---@field stderr "pipe"|"inherit"|"ignore"|nil

--- Starts `cmd` (looked up in PATH) with the arguments `args`. Options:
--- `cwd`; `env`, a table name -> value that replaces the environment;
--- `stdin`, `stdout`, `stderr`: "pipe" (a stream on the Process),
--- "inherit" (the default: this process's own) or "ignore" (/dev/null).
--- Returns the Process, or nil, message, name (e.g. ENOENT).
---@param cmd string
---@param args string[]?
---@param opts synchro.aio.SpawnOptions?
---@return synchro.aio.Process|nil
---@return string? message
---@return string? name
function M.spawn(cmd, args, opts) end

--- Waits for the child to exit; returns its exit code (128 + n when
--- signal n killed it) and the signal number (nil if none). Any number of
--- tasks may wait; a cancelled wait leaves the child running.
---@return integer code
---@return integer|nil signal
function Process:wait() end

--- Sends a signal (a name like "SIGKILL" or "KILL", or a number; default
--- "SIGTERM"). Returns true, or nil, message, name (ESRCH once the child
--- has exited).
---@param sig string|integer|nil
---@return true|nil ok
---@return string? message
---@return string? name
function Process:kill(sig) end

--- Ends the child and its group: SIGTERM, then, unless the child exited
--- within `grace` seconds (default: the `kill_grace` option), SIGKILL to
--- whatever is left of the group. Waits for the child to exit; returns
--- its code and signal as wait() does. A cancellation of the calling
--- task does not interrupt it (it is cleanup, bounded by the grace).
---@param grace number?
---@return integer code
---@return integer|nil signal
function Process:terminate(grace) end

--- Closes the pipes and, if the child still runs, kills it with SIGKILL
--- (call wait() first to let it finish). Never waits; the child is
--- reaped when it exits. Safe to call twice.
function Process:close() end

--- Runs `cmd` to the end and returns what it wrote to stdout and stderr,
--- its exit code and the signal that killed it (or nil). Both pipes are
--- read concurrently, so a child that writes a lot to both cannot block.
--- Options as for spawn, except that `stdin` may be a string to feed to
--- the child (default: "ignore"), and stdout and stderr default to "pipe"
--- (with "inherit" or "ignore" the result is nil). If the task is
--- cancelled, the child is killed. Returns nil, message, name if the
--- child cannot start.
---@param cmd string
---@param args string[]?
---@param opts synchro.aio.SpawnOptions?
---@return string|nil stdout
---@return string|nil stderr
---@return integer|nil code
---@return integer|nil signal
function M.run(cmd, args, opts) end

return M
