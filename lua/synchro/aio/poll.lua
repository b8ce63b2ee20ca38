--- synchro.aio.poll: waits until a foreign file descriptor (a socket
--- opened by a C library such as libpq, a pipe) is readable or writable,
--- without blocking the loop. The building block for fd-based libraries:
---
---     local aio = require "synchro.aio"
---     local ready, msg, code = aio.poll(fd, "r", 5)   -- "r", "w" or "rw"
---
--- libuv allows one uv_poll handle per fd, so every waiter on one fd
--- shares one handle here; it watches the union of what its waiters want
--- and is closed as soon as nobody waits, so an fd that its library
--- closes between waits is never watched after it was closed.
local core = require "synchro.core"
local sched = require "synchro.sched"
local check = require "synchro.check"

local ypcall = sched.yieldable_pcalls()
local argerror = check.argerror
local pairs, type, error = pairs, type, error

local M = {}

local WANT = { r = 1, w = 2, rw = 3, wr = 3 }
local NAMES = { "r", "w", "rw" }

-- fd -> { handle = core poll handle, waiters = { [waiter] = true } }
local watched = {}

-- Watches what the waiters want, or closes the handle when none is left.
local function rearm(fd, entry)
  local r, w = false, false
  for waiter in pairs(entry.waiters) do
    local want = waiter.want
    if want ~= 2 then r = true end
    if want ~= 1 then w = true end
  end
  if not (r or w) then
    entry.handle:close()
    if watched[fd] == entry then watched[fd] = nil end
    return true
  end
  return entry.handle:start(NAMES[(r and 1 or 0) + (w and 2 or 0)])
end

local function remove(fd, waiter)
  local entry = watched[fd]
  if entry and entry.waiters[waiter] then
    entry.waiters[waiter] = nil
    rearm(fd, entry)
  end
end

-- What of want is in got ("r", "w", "rw"), or nil.
local function intersect(want, got)
  local g = WANT[got]
  local r = want ~= 2 and g ~= 2
  local w = want ~= 1 and g ~= 1
  if r or w then return NAMES[(r and 1 or 0) + (w and 2 or 0)] end
  return nil
end

local function on_event(fd, entry, got, msg, code)
  if watched[fd] ~= entry then return end
  -- Take the waiters to wake first: a woken task runs at once and may
  -- wait on this fd again.
  local wake = {}
  for waiter in pairs(entry.waiters) do
    local value
    if got == nil then
      value = { false, msg, code }
    else
      local ready = intersect(waiter.want, got)
      if ready then value = { ready } end
    end
    if value then
      entry.waiters[waiter] = nil
      wake[#wake + 1] = waiter
      waiter.value = value
    end
  end
  rearm(fd, entry)
  for i = 1, #wake do
    local waiter = wake[i]
    waiter.task.sched:wake(waiter.task, waiter.token, waiter.value)
  end
end

local function watch(fd)
  local entry = watched[fd]
  if entry then return entry end
  entry = { waiters = {} }
  local handle, msg, code = core.poll_new(fd, function(got, m, c)
    return on_event(fd, entry, got, m, c)
  end)
  if not handle then return nil, msg, code end
  entry.handle = handle
  watched[fd] = entry
  return entry
end

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
function M.poll(fd, events, timeout)
  if type(fd) ~= "number" or fd % 1 ~= 0 or fd < 0 or fd > 2147483647 then
    argerror(1, "poll", type(fd) == "number" and "fd out of range" or
      "integer fd expected, got " .. type(fd))
  end
  local want = WANT[events]
  if want == nil then
    argerror(2, "poll", "events must be \"r\", \"w\" or \"rw\", got " ..
      (type(events) == "string" and ("%q"):format(events) or type(events)))
  end
  if timeout ~= nil then
    if type(timeout) ~= "number" then
      argerror(3, "poll", "number expected, got " .. type(timeout))
    end
    timeout = check.time(timeout, 3, "poll", "timeout")
  end
  local task, token = sched.prepare("aio.poll")
  local entry, msg, code = watch(fd)
  if not entry then return nil, msg, code end
  local waiter = { task = task, token = token, want = want }
  entry.waiters[waiter] = true
  local ok
  ok, msg, code = rearm(fd, entry)
  if not ok then
    remove(fd, waiter)
    return nil, msg, code
  end
  local timer
  if timeout ~= nil then
    timer = task.sched.backend.timer(function()
      remove(fd, waiter)
      task.sched:wake(task, token, false)
    end)
    timer:start(timeout)
  end
  local done, value = ypcall(sched.suspend, task)
  remove(fd, waiter)
  if timer then timer:close() end
  if not done then error(value, 0) end
  if value == false then
    return nil, ("ETIMEDOUT: fd %d not ready after %g s"):format(fd, timeout),
      "ETIMEDOUT"
  end
  if value[1] then return value[1] end
  return nil, value[2], value[3]
end

--- The number of fds being watched (for leak checks in tests).
---@return integer
function M.watched()
  return sched.count(watched)
end

return M
