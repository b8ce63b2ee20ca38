--- synchro.aio.udp: UDP sockets for async code on a synchronizer's loop.
--- A socket receives only while a task waits in recv(); datagrams that
--- arrive meanwhile wait in the kernel's buffer (which drops what does not
--- fit, as UDP does).
local core = require "synchro.core"
local sched = require "synchro.sched"
local dns = require "synchro.aio.dns"
local await = require("synchro.aio.request").await

local udp = {}

local CLOSED_MSG, CLOSED_CODE = "ECANCELED: operation canceled", "ECANCELED"

local check = require "synchro.check"
local argerror, check_type, check_port =
  check.argerror, check.type, check.port



---@class synchro.udp.Socket
local Socket = {}
Socket.__index = Socket
udp.Socket = Socket

local function stop_receiving(self)
  if self.receiving and not self.closed then
    self.receiving = false
    self.h:recv_stop()
  end
end

local function on_recv(self, data, addr, port)
  local q = self.queue
  local tail = q.tail + 1
  q.tail = tail
  -- data nil: an error (addr, port are its message and code)
  q[tail] = { data, addr, port }
  local receiver = self.receiver
  if receiver then
    self.receiver = nil
    receiver.sched:wake(receiver, self.receiver_token)
  end
  if self.receiver == nil then stop_receiving(self) end
end

local function new_socket(h, family)
  local self = setmetatable({
    h = h, family = family, closed = false, receiving = false,
    queue = { head = 1, tail = 0 },
  }, Socket)
  self.on_recv = function(data, addr, port)
    return on_recv(self, data, addr, port)
  end
  self.cancel_recv = function()
    self.receiver = nil
    stop_receiving(self)
  end
  return self
end

--- Opens a UDP socket bound to `host` (a name or a numeric address) and
--- `port` (0: a free port; see sock:sockname()). `opts.reuseaddr` sets
--- SO_REUSEADDR. Returns the socket, or nil, msg, code.
---@param host string
---@param port integer
---@param opts {reuseaddr: boolean?}|nil
---@return synchro.udp.Socket|nil
---@return string|nil message
---@return string|nil code
function udp.bind(host, port, opts)
  check_type(host, "string", 1, "bind")
  check_port(port, 2, "bind")
  opts = check.opts(opts, 3, "bind", { "reuseaddr" })
  local addrs, msg, code = dns.resolve(host, port, "dgram")
  if not addrs then return nil, msg, code end
  for i = 1, #addrs do
    local h = core.udp_new()
    local ok
    ok, msg, code = h:bind(addrs[i].addr, port, opts.reuseaddr)
    if ok then return new_socket(h, addrs[i].family) end
    h:close()
  end
  return nil, msg, code
end

local function check_socket(self, name)
  if getmetatable(self) ~= Socket then
    argerror(1, name, "socket expected, got " .. type(self), 3)
  end
  if self.closed then argerror(1, name, "socket is closed", 3) end
end

local function start_send(cb, h, data, addr, port)
  local r, m, c = h:send(data, addr, port, cb) -- not a tail call: errors
  return r, m, c                              -- name 'send'
end

--- Sends one datagram to `host` and `port`; returns once it is sent:
--- true, or nil, msg, code.
---@param data string
---@param host string
---@param port integer
---@return true|nil
---@return string|nil message
---@return string|nil code
function Socket:send(data, host, port)
  check_socket(self, "send")
  check_type(data, "string", 1, "send")
  check_type(host, "string", 2, "send")
  check_port(port, 3, "send")
  local addrs, msg, code = dns.resolve(host, port, "dgram")
  if not addrs then return nil, msg, code end
  if self.closed then return nil, CLOSED_MSG, CLOSED_CODE end
  local addr = addrs[1]
  for i = 1, #addrs do
    if addrs[i].family == self.family then
      addr = addrs[i]
      break
    end
  end
  -- true (sent at once), nil, msg, code, or a queued send awaited
  return await("send", start_send, nil, nil, self.h, data, addr.addr, port)
end

--- Waits for the next datagram: returns data, addr, port; or nil, msg,
--- code on an error (ECANCELED if the socket is closed meanwhile).
---@return string|nil data
---@return string|nil addr, or the error message
---@return integer|string|nil port, or the error code
function Socket:recv()
  check_socket(self, "recv")
  local q = self.queue
  while q.head > q.tail do
    local task, token = sched.prepare("recv")
    if self.receiver then
      error("another task is already receiving on this socket", 2)
    end
    if not self.receiving then
      local ok, msg, code = self.h:recv_start(self.on_recv)
      if not ok then return nil, msg, code end
      self.receiving = true
    end
    self.receiver, self.receiver_token = task, token
    sched.suspend(task, self.cancel_recv)
    if self.closed then return nil, CLOSED_MSG, CLOSED_CODE end
  end
  local head = q.head
  local d = q[head]
  q[head] = nil
  if head == q.tail then
    q.head, q.tail = 1, 0
  else
    q.head = head + 1
  end
  if d[1] == nil then return nil, d[2], d[3] end
  return d[1], d[2], d[3]
end

--- The local address and port.
---@return string|nil addr
---@return integer|string port, or the error message
function Socket:sockname()
  check_socket(self, "sockname")
  local addr, port, x = self.h:sockname()
  if addr == nil then return nil, port, x end
  return addr, port
end

--- Closes the socket at once; a task waiting in recv() gets nil,
--- "ECANCELED: ...", "ECANCELED". Idempotent.
function Socket:close()
  if self.closed then return end
  self.closed = true
  self.receiving = false
  self.h:close()
  local receiver = self.receiver
  if receiver then
    self.receiver = nil
    receiver.sched:wake(receiver, self.receiver_token)
  end
end
Socket.__close = Socket.close

return udp
