---@meta synchro.aio.signal

---@class synchro.aio.signal
---@field Signal synchro.aio.Signal the class of signal watchers
local M = {}

local Signal = {}

--- The signal number for a name ("sigterm", "SIGHUP", "int": any case,
--- with or without "SIG") or a number; nil, name when unknown.
---@param sig string|integer
---@return integer|nil signum
---@return string|nil name "SIGTERM"
function M.number(sig) end

--- A watched signal: `wait([timeout])` for the next delivery, `close()`.
---@class synchro.aio.Signal
---@field signum integer
---@field name string "SIGTERM"

--- Starts watching a signal (a name such as "sigterm", "SIGHUP" or "int",
--- any case, or a number). While watched, the signal no longer has its
--- default effect (SIGTERM no longer ends the process): deliveries queue
--- up until `wait` takes them. Closed by `close()`, garbage collection or
--- `<close>`. Returns nil, message, name if libuv refuses (e.g. SIGKILL).
---@param sig string|integer
---@return synchro.aio.Signal|nil
---@return string? message
---@return string? name
function M.signal(sig) end

--- Waits for the next delivery of the signal (one queued earlier counts)
--- up to `timeout` seconds (default: no limit). Returns the signal's
--- name ("SIGTERM"); nil, "ETIMEDOUT: ...", "ETIMEDOUT" on timeout; nil
--- once closed.
---@param timeout number?
---@return string|nil name
---@return string? message
---@return string? code
function Signal:wait(timeout) end

--- Stops watching (the signal's default action returns); a waiting task
--- gets nil. Safe to call twice.
function Signal:close() end

return M
