-- Helpers for the network specs, used inside the loop VM (require it from
-- a wrapped function): leak checks and small servers.
local core = require "synchro.core"

local net = {}

local pid
local function self_pid()
  if pid == nil then
    local f = assert(io.open("/proc/self/stat"))
    pid = f:read("*l"):match("^(%d+)")
    f:close()
  end
  return pid
end

--- The number of open file descriptors of this process, pipes aside: the
--- pipe of the popen that lists them comes and goes while `ls` runs.
function net.fd_count()
  local p = io.popen("ls -l /proc/" .. self_pid() .. "/fd")
  local n = 0
  for line in p:lines() do
    local target = line:match(" %-> (.*)$")
    if target and not target:find("^pipe:") then n = n + 1 end
  end
  p:close()
  return n
end

local warmed = false

--- Open libuv handles of the loop and open fds of the process, now.
function net.count()
  return { handles = core.loop_handles(), fds = net.fd_count() }
end
local count = net.count

--- Open libuv handles of the loop and open fds of the process, once they
--- are steady (what an earlier test left closing has closed). The first
--- listen of a loop opens one descriptor that stays (libuv's reserve for
--- EMFILE): done once here, before counting.
function net.snapshot()
  local aio = require "synchro.aio"
  if not warmed then
    warmed = true
    assert(aio.tcp.listen("127.0.0.1", 0)):close()
  end
  local last = count()
  for _ = 1, 20 do
    collectgarbage()
    aio.sleep(0.01)
    local now = count()
    if now.handles == last.handles and now.fds == last.fds then break end
    last = now
  end
  return last
end

--- Waits (up to 2 s, in async code) until the loop's handles and the
--- process's fds are back to `before`; returns the snapshot it ended with.
function net.settle(before)
  local aio = require "synchro.aio"
  local now
  for _ = 1, 100 do
    collectgarbage()
    now = count()
    if now.handles <= before.handles and now.fds <= before.fds then break end
    aio.sleep(0.02)
  end
  return now
end

--- An echo server on 127.0.0.1 (any free port): writes back what it reads.
function net.echo_server()
  local aio = require "synchro.aio"
  return assert(aio.tcp.listen("127.0.0.1", 0, function(s)
    while true do
      local data = s:read()
      if not data or not s:write(data) then return end
    end
  end))
end

--- A server that accepts nothing: its backlog fills up, after which
--- connecting to it hangs (the kernel drops the SYNs). Returns the server
--- and the clients that filled the backlog.
function net.full_server()
  local aio = require "synchro.aio"
  local server = assert(aio.tcp.listen("127.0.0.1", 0, nil, { backlog = 1 }))
  local fillers = {}
  for _ = 1, 16 do
    local c = aio.tcp.connect("127.0.0.1", server:port(), { timeout = 0.2 })
    if not c then return server, fillers end
    fillers[#fillers + 1] = c
  end
  error("the backlog never filled up")
end

return net
