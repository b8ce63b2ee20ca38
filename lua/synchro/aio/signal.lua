--- synchro.aio.signal: await signals (SIGTERM, SIGHUP, ...) in async
--- code on a synchronizer's loop (uv_signal).
local core = require "synchro.core"
local request = require "synchro.aio.request"
local check = require "synchro.check"

local M = {}

local argerror = check.argerror

--- The signal number for a name ("sigterm", "SIGHUP", "int": any case,
--- with or without "SIG") or a number; nil, name when unknown.
---@param sig string|integer
---@return integer|nil signum
---@return string|nil name "SIGTERM"
function M.number(sig)
  if type(sig) == "number" then
    for name, num in pairs(core.signals) do
      if num == sig then return num, name end
    end
    return nil
  end
  if type(sig) ~= "string" then return nil end
  local name = sig:upper()
  if name:sub(1, 3) ~= "SIG" then name = "SIG" .. name end
  local num = core.signals[name]
  if num then return num, name end
  return nil
end

--- A watched signal: `wait([timeout])` for the next delivery, `close()`.
---@class synchro.aio.Signal
---@field signum integer
---@field name string "SIGTERM"
local Signal = {}
Signal.__index = Signal
M.Signal = Signal

--- Starts watching a signal (a name such as "sigterm", "SIGHUP" or "int",
--- any case, or a number). While watched, the signal no longer has its
--- default effect (SIGTERM no longer ends the process): deliveries queue
--- up until `wait` takes them. Closed by `close()`, garbage collection or
--- `<close>`. Returns nil, message, name if libuv refuses (e.g. SIGKILL).
---@param sig string|integer
---@return synchro.aio.Signal|nil
---@return string? message
---@return string? name
function M.signal(sig)
  if type(sig) ~= "string" and type(sig) ~= "number" then
    argerror(1, "signal", "signal name expected, got " .. type(sig))
  end
  local num, name = M.number(sig)
  if not num then
    argerror(1, "signal", "unknown signal '" .. tostring(sig) .. "'")
  end
  local q = request.queue()
  local handle, msg, code = core.signal(num, function() q:push(true) end)
  if not handle then return nil, msg, code end
  return setmetatable({ handle = handle, q = q, signum = num, name = name },
    Signal)
end

--- Waits for the next delivery of the signal (one queued earlier counts)
--- up to `timeout` seconds (default: no limit). Returns the signal's
--- name ("SIGTERM"); nil, "ETIMEDOUT: ...", "ETIMEDOUT" on timeout; nil
--- once closed.
---@param timeout number?
---@return string|nil name
---@return string? message
---@return string? code
function Signal:wait(timeout)
  if getmetatable(self) ~= Signal then
    argerror(1, "wait", "signal expected, got " .. type(self))
  end
  timeout = check.time(timeout, 1, "wait", "timeout")
  local ok, msg, code = self.q:pop("wait", timeout)
  if ok then return self.name end
  return nil, msg, code
end

--- Stops watching (the signal's default action returns); a waiting task
--- gets nil. Safe to call twice.
Signal.close = request.close_handle
Signal.__close = request.close_handle
Signal.__gc = request.close_handle

return M
