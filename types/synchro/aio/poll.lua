---@meta synchro.aio.poll

---@class synchro.aio.poll
local M = {}


--- Waits until `fd` is ready for `events`: `"r"` (readable), `"w"`
--- (writable) or `"rw"` (either). Returns what is ready (`"r"`, `"w"` or
--- `"rw"`, never more than asked for); `nil, "ETIMEDOUT: ...",
--- "ETIMEDOUT"` after `timeout` seconds (default: no limit); `nil, msg,
--- code` if the fd cannot be watched (`EBADF`, `EEXIST` for an fd that a
--- libuv handle of this loop owns, `EPERM` for a regular file).
--- Cancellation stops the wait at once. Readiness is level triggered: a
--- second call returns at once while data is still unread.
---@async
---@param fd integer a file descriptor (made non-blocking, never closed)
---@param events "r"|"w"|"rw"
---@param timeout? number seconds
---@return "r"|"w"|"rw"|nil ready
---@return string? msg
---@return string? code
function M.poll(fd, events, timeout) end

--- The number of fds being watched (for leak checks in tests).
---@return integer
function M.watched() end

return M
