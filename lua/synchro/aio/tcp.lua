--- synchro.aio.tcp: TCP clients and servers for async code on a
--- synchronizer's loop, with a buffered stream.
---
--- A stream reads from the socket only while a task waits for data, so
--- data nobody reads stays in the kernel and slows the peer down (back
--- pressure). A write returns once libuv has written all of it.
local core = require "synchro.core"
local sched = require "synchro.sched"
local dns = require "synchro.aio.dns"
local request = require "synchro.aio.request"

local _, yxpcall = sched.yieldable_pcalls()
local traceback = debug.traceback
local type, tostring, setmetatable, getmetatable, error =
  type, tostring, setmetatable, getmetatable, error

local tcp = {}

local CLOSED_MSG, CLOSED_CODE = "ECANCELED: operation canceled", "ECANCELED"

local check = require "synchro.check"
local argerror, check_type, check_port, check_opts =
  check.argerror, check.type, check.port, check.opts




-- Streams -----------------------------------------------------------------

local stream = require "synchro.aio.stream"

--- A TCP stream: the one buffered stream (synchro.aio.Stream) plus the
--- socket's own methods.
---@class synchro.tcp.Stream: synchro.aio.Stream
local Stream = stream.class({})
tcp.Stream = Stream

local function new_stream(h) return stream.new(h, Stream) end
local check_stream = stream.check

--- Turns Nagle's algorithm off (true) or on.
---@param enable boolean
---@return true|nil
---@return string|nil message
---@return string|nil code
function Stream:nodelay(enable)
  check_stream(self, "nodelay")
  return self.h:nodelay(enable)
end

--- Turns TCP keep-alive on (with the initial delay in seconds) or off.
---@param enable boolean
---@param delay integer|nil seconds, default 60
---@return true|nil
---@return string|nil message
---@return string|nil code
function Stream:keepalive(enable, delay)
  check_stream(self, "keepalive")
  return self.h:keepalive(enable, delay)
end

local function name2(addr, port, x)
  if addr == nil then return nil, port, x end
  return addr, port
end

--- The peer's address and port.
---@return string|nil addr
---@return integer|string port, or the error message
function Stream:peername()
  check_stream(self, "peername")
  return name2(self.h:peername())
end

--- The local address and port.
---@return string|nil addr
---@return integer|string port, or the error message
function Stream:sockname()
  check_stream(self, "sockname")
  return name2(self.h:sockname())
end

-- Connecting --------------------------------------------------------------

local function start_connect(cb, h, a)
  local r, m, c = h:connect(a.addr, a.port, cb)
  return r, m, c
end

-- A cancelled connect closes its handle (libuv then ends the connect),
-- as does one that succeeded for a task cancelled before it ran again.
local function connect_one(a)
  sched.task("aio.tcp.connect") -- before a handle is made
  local h = core.tcp_new()
  local function close() h:close() end
  local ok, msg, code = request.await("aio.tcp.connect", start_connect,
    close, close, h, a)
  if not ok then
    h:close()
    return nil, msg, code
  end
  return h
end

local function connect_all(host, port)
  local addrs, msg, code = dns.resolve(host, port, "stream")
  if not addrs then return nil, msg, code end
  for i = 1, #addrs do
    local h
    h, msg, code = connect_one(addrs[i])
    if h then return new_stream(h) end
  end
  return nil, msg, code
end

--- Connects to `host` (a name or a numeric IPv4/IPv6 address) and
--- `port`, trying each address the name resolves to. `opts.timeout`
--- (seconds) bounds the whole attempt.
--- Returns a stream, or nil, "ECONNREFUSED: ...", "ECONNREFUSED".
---@param host string
---@param port integer
---@param opts {timeout: number?}|nil
---@return synchro.tcp.Stream|nil
---@return string|nil message
---@return string|nil code
function tcp.connect(host, port, opts)
  check_type(host, "string", 1, "connect")
  check_port(port, 2, "connect")
  opts = check_opts(opts, 3, "connect", { "timeout" })
  local timeout = check.time(opts.timeout, 3, "connect", "timeout")
  if timeout ~= nil then
    return sched.timeout(timeout, connect_all, host, port)
  end
  return connect_all(host, port)
end

-- Servers -----------------------------------------------------------------

---@class synchro.tcp.Server
local Server = {}
Server.__index = Server
tcp.Server = Server

local function report(self, what, msg)
  io.stderr:write(("synchro: tcp server on port %s: %s: %s\n")
    :format(tostring(self.port_number), what, tostring(msg)))
end

local function handler_traceback(err)
  if type(err) ~= "string" then return err end
  return traceback(err, 2)
end

-- The task of one connection: runs the handler, then closes the stream.
local function run_handler(self, conn)
  local me = sched.current_task()
  local ok, err = yxpcall(self.handler, handler_traceback, conn)
  conn:close()
  self.tasks[me] = nil
  if not ok then
    if sched.is_cancelled(err) then error(err, 0) end
    report(self, "connection handler failed", err)
  end
end

local function on_connection(self, ok, msg, code)
  if self.closed then return end
  if self.handler then
    if not ok then return report(self, "cannot accept", msg) end
    local h, m = self.h:accept()
    if not h then return report(self, "cannot accept", m) end
    local task = self.sched:spawn(run_handler, self, new_stream(h))
    self.tasks[task] = true
    self.sched:run_ready()
    return
  end
  if ok then
    self.pending = self.pending + 1
  else
    self.accept_msg, self.accept_code = msg, code
  end
  local acceptor = self.acceptor
  if acceptor then
    self.acceptor = nil
    acceptor.sched:wake(acceptor, self.acceptor_token)
  end
end

local function new_server(h, sch, handler)
  local self = setmetatable({
    h = h, sched = sch, handler = handler, tasks = {}, pending = 0,
    closed = false,
  }, Server)
  self.on_connection = function(ok, msg, code)
    return on_connection(self, ok, msg, code)
  end
  return self
end

--- Listens on `host` and `port` (0: any free port, see server:port()).
--- Each connection is handled by `handler(stream)` in a task of its own;
--- the stream is closed when the handler returns, and an error it raises
--- is reported on stderr. Without a handler, call server:accept().
--- `opts.backlog`: the kernel's queue of connections not yet accepted
--- (default 511). The server runs until server:close(), or until the
--- synchronizer closes.
---@param host string
---@param port integer
---@param handler (async fun(stream: synchro.tcp.Stream))|nil
---@param opts {backlog: integer?, ipv6only: boolean?}|nil
---@return synchro.tcp.Server|nil
---@return string|nil message
---@return string|nil code
function tcp.listen(host, port, handler, opts)
  check_type(host, "string", 1, "listen")
  check_port(port, 2, "listen")
  if handler ~= nil then check_type(handler, "function", 3, "listen") end
  opts = check_opts(opts, 4, "listen", { "backlog", "ipv6only" })
  local backlog = opts.backlog or 511
  if type(backlog) ~= "number" or backlog < 1 then
    argerror(4, "listen", "backlog: positive number expected")
  end
  local me = sched.task("aio.tcp.listen")
  local addrs, msg, code = dns.resolve(host, port, "stream")
  if not addrs then return nil, msg, code end
  for i = 1, #addrs do
    local h = core.tcp_new()
    local ok
    ok, msg, code = h:bind(addrs[i].addr, port, opts.ipv6only)
    if ok then
      local server = new_server(h, me.sched, handler)
      ok, msg, code = h:listen(backlog, server.on_connection)
      if ok then
        server.port_number = select(2, h:sockname())
        return server
      end
    end
    h:close()
  end
  return nil, msg, code
end

local function check_server(self, name)
  if getmetatable(self) ~= Server then
    argerror(1, name, "server expected, got " .. type(self), 3)
  end
  if self.closed then argerror(1, name, "server is closed", 3) end
end

--- Waits for the next connection (only for a server without a handler).
--- Returns a stream, or nil, msg, code (ECANCELED if the server is closed
--- meanwhile). A cancelled accept loses no connection.
---@return synchro.tcp.Stream|nil
---@return string|nil message
---@return string|nil code
function Server:accept()
  check_server(self, "accept")
  if self.handler then
    argerror(1, "accept", "this server passes connections to its handler")
  end
  while self.pending == 0 do
    if self.closed then return nil, CLOSED_MSG, CLOSED_CODE end
    if self.accept_code then
      local msg, code = self.accept_msg, self.accept_code
      self.accept_msg, self.accept_code = nil, nil
      return nil, msg, code
    end
    local task, token = sched.prepare("accept")
    if self.acceptor then
      error("another task is already accepting on this server", 2)
    end
    self.acceptor, self.acceptor_token = task, token
    sched.suspend(task, function() self.acceptor = nil end)
  end
  self.pending = self.pending - 1
  local h, msg, code = self.h:accept()
  if not h then return nil, msg, code end
  return new_stream(h)
end

--- The port the server listens on.
---@return integer
function Server:port()
  check_server(self, "port")
  local _, port = self.h:sockname()
  return port
end

--- The address and port the server listens on.
---@return string|nil addr
---@return integer|string port, or the error message
function Server:sockname()
  check_server(self, "sockname")
  return name2(self.h:sockname())
end

--- Stops accepting connections and cancels the connection handlers still
--- running (their streams close when they end). Never waits; idempotent.
function Server:close()
  if self.closed then return end
  self.closed = true
  self.h:close()
  local acceptor = self.acceptor
  if acceptor then
    self.acceptor = nil
    acceptor.sched:wake(acceptor, self.acceptor_token)
  end
  local tasks = {}
  for task in pairs(self.tasks) do tasks[#tasks + 1] = task end
  for i = 1, #tasks do tasks[i].sched:cancel(tasks[i]) end
end
Server.__close = Server.close

--- The number of connection handlers still running.
---@return integer
function Server:connections()
  local n = 0
  for _ in pairs(self.tasks) do n = n + 1 end
  return n
end

return tcp
