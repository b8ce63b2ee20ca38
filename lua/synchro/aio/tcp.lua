--- synchro.aio.tcp: TCP clients and servers for async code on a
--- synchronizer's loop, with a buffered stream.
---
--- A stream reads from the socket only while a task waits for data, so
--- data nobody reads stays in the kernel and slows the peer down (back
--- pressure). A write returns once libuv has written all of it.
local core = require "synchro.core"
local sched = require "synchro.sched"
local dns = require "synchro.aio.dns"

local ypcall, yxpcall = sched.yieldable_pcalls()
local concat = table.concat
local traceback = debug.traceback
local type, tostring, setmetatable, getmetatable, error =
  type, tostring, setmetatable, getmetatable, error

local tcp = {}

local CLOSED_MSG, CLOSED_CODE = "ECANCELED: operation canceled", "ECANCELED"

local check = require "synchro.check"
local argerror, check_type, check_port, check_opts =
  check.argerror, check.type, check.port, check.opts




-- Streams -----------------------------------------------------------------

---@class synchro.tcp.Stream
local Stream = {}
Stream.__index = Stream
tcp.Stream = Stream

-- The buffer is a queue of chunks: chunks[first..last], size bytes.

-- Removes and returns the first n bytes (0 < n <= size).
local function take(self, n)
  local chunks, first = self.chunks, self.first
  local c = chunks[first]
  local len = #c
  local out
  if len == n then
    chunks[first] = nil
    first = first + 1
    out = c
  elseif len > n then
    chunks[first] = c:sub(n + 1)
    out = c:sub(1, n)
  else
    local parts, got = {}, 0
    while got < n do
      c = chunks[first]
      len = #c
      if got + len <= n then
        parts[#parts + 1] = c
        chunks[first] = nil
        first = first + 1
        got = got + len
      else
        parts[#parts + 1] = c:sub(1, n - got)
        chunks[first] = c:sub(n - got + 1)
        got = n
      end
    end
    out = concat(parts)
  end
  self.size = self.size - n
  if first > self.last then
    self.first, self.last = 1, 0
  else
    self.first = first
  end
  return out
end

-- Merges the buffered chunks into one string and returns it.
local function merged(self)
  local chunks, first, last = self.chunks, self.first, self.last
  if last > first then
    local s = concat(chunks, "", first, last)
    for i = first, last do chunks[i] = nil end
    chunks[1] = s
    self.first, self.last = 1, 1
    return s
  end
  return chunks[first]
end

local function stop_reading(self)
  if self.reading and not self.closed then
    self.reading = false
    self.h:read_stop()
  end
end

-- The read callback: buffers data (or notes the end), wakes the reader,
-- and stops reading unless a task is waiting again.
local function on_read(self, data, msg, code)
  if data then
    local last = self.last + 1
    self.last = last
    self.chunks[last] = data
    self.size = self.size + #data
  else
    self.reading = false
    if code == "EOF" then
      self.eof = true
    else
      self.err_msg, self.err_code = msg, code
    end
  end
  local reader = self.reader
  if reader then
    self.reader = nil
    reader.sched:wake(reader, self.reader_token)
  end
  if self.reader == nil then stop_reading(self) end
end

-- Completions of queued writes, in the order the writes were queued.
local function on_write(self, ok, msg, code)
  local q = self.writes
  local head = q.head
  local entry = q[head]
  q[head] = nil
  if head == q.tail then
    q.head, q.tail = 1, 0
  else
    q.head = head + 1
  end
  entry.ok, entry.msg, entry.code = ok, msg, code
  local task = entry.task
  if task then task.sched:wake(task, entry.token) end
end

local function new_stream(h)
  local self = setmetatable({
    h = h,
    chunks = {}, first = 1, last = 0, size = 0,
    reading = false, eof = false, closed = false,
    writes = { head = 1, tail = 0 },
  }, Stream)
  self.on_read = function(data, msg, code)
    return on_read(self, data, msg, code)
  end
  self.on_write = function(ok, msg, code)
    return on_write(self, ok, msg, code)
  end
  self.cancel_read = function()
    self.reader = nil
    stop_reading(self)
  end
  return self
end

local function check_stream(self, name)
  if getmetatable(self) ~= Stream then
    argerror(1, name, "stream expected, got " .. type(self), 3)
  end
  if self.closed then argerror(1, name, "stream is closed", 3) end
end

-- Waits until more data, the end or an error arrives.
local function fill(self, what)
  local task, token = sched.prepare(what)
  if self.reader then
    error("another task is already reading from this stream", 3)
  end
  if not self.reading then
    local ok, msg, code = self.h:read_start(self.on_read)
    if not ok then
      self.err_msg, self.err_code = msg, code
      return
    end
    self.reading = true
  end
  self.reader, self.reader_token = task, token
  -- Cancelled: cancel_read stops reading; buffered data stays.
  sched.suspend(task, self.cancel_read)
end

local function take_all(self)
  local chunks, first = self.chunks, self.first
  local out
  if first == self.last then
    out = chunks[first]
    chunks[first] = nil
  else
    out = concat(chunks, "", first, self.last)
    for i = first, self.last do chunks[i] = nil end
  end
  self.first, self.last, self.size = 1, 0, 0
  return out
end

--- Reads up to `n` bytes (default: all that is buffered), waiting for data
--- if none is buffered. Returns nil at the end of the stream, or nil,
--- "ECONNRESET: ...", "ECONNRESET" on an error.
---@param n integer|nil
---@return string|nil data
---@return string|nil message
---@return string|nil code
function Stream:read(n)
  check_stream(self, "read")
  if n ~= nil and (type(n) ~= "number" or n < 0 or n % 1 ~= 0) then
    argerror(1, "read", "non-negative integer expected, got " ..
      (type(n) == "number" and tostring(n) or type(n)))
  end
  if n == 0 then return "" end
  while self.size == 0 do
    if self.err_code then return nil, self.err_msg, self.err_code end
    if self.eof then return nil end
    fill(self, "read")
  end
  if n == nil or n >= self.size then return take_all(self) end
  return take(self, n)
end

-- Waits until delim is buffered; returns where it starts and ends, or
-- nil at the end of the stream or on an error.
local function read_to(self, delim, what)
  local init = 1
  while true do
    if self.size > 0 then
      local s = merged(self)
      local a, b = s:find(delim, init, true)
      if a then return a, b end
      init = #s - #delim + 2
      if init < 1 then init = 1 end
    end
    if self.eof or self.err_code then return nil end
    fill(self, what)
  end
end

--- Reads one line and returns it without its "\n" (or "\r\n"). At the end
--- of the stream, a last line without "\n" is returned, then nil.
---@return string|nil line
---@return string|nil message
---@return string|nil code
function Stream:read_line()
  check_stream(self, "read_line")
  local a = read_to(self, "\n", "read_line")
  if a then
    local line = take(self, a)
    if a > 1 and line:byte(a - 1) == 13 then return line:sub(1, a - 2) end
    return line:sub(1, a - 1)
  end
  if self.err_code then return nil, self.err_msg, self.err_code end
  if self.size > 0 then return take_all(self) end
  return nil
end

--- Reads up to `delim` and returns the data before it; `delim` is
--- consumed. If the stream ends first: nil, "EOF: ...", "EOF" (what was
--- read stays buffered).
---@param delim string
---@return string|nil data
---@return string|nil message
---@return string|nil code
function Stream:read_until(delim)
  check_stream(self, "read_until")
  if type(delim) ~= "string" or delim == "" then
    argerror(1, "read_until", "non-empty string expected, got " ..
      (type(delim) == "string" and "an empty string" or type(delim)))
  end
  local a, b = read_to(self, delim, "read_until")
  if a then return take(self, b):sub(1, a - 1) end
  if self.err_code then return nil, self.err_msg, self.err_code end
  return nil, "EOF: connection closed before the delimiter", "EOF"
end

--- Reads exactly `n` bytes. If the stream ends first: nil, "EOF:
--- connection closed after k of n bytes", "EOF" (the k bytes stay
--- buffered).
---@param n integer
---@return string|nil data
---@return string|nil message
---@return string|nil code
function Stream:read_exactly(n)
  check_stream(self, "read_exactly")
  if type(n) ~= "number" or n < 0 or n % 1 ~= 0 then
    argerror(1, "read_exactly", "non-negative integer expected, got " ..
      (type(n) == "number" and tostring(n) or type(n)))
  end
  while self.size < n do
    if self.err_code then return nil, self.err_msg, self.err_code end
    if self.eof then
      return nil, ("EOF: connection closed after %d of %d bytes")
        :format(self.size, n), "EOF"
    end
    fill(self, "read_exactly")
  end
  if n == 0 then return "" end
  return take(self, n)
end

--- The number of bytes read from the socket and not yet consumed.
---@return integer
function Stream:buffered() return self.size end

--- Writes `data`; returns once all of it is written (to the kernel), so a
--- slow reader slows the writer down. Returns true, or nil, "EPIPE: ...",
--- "EPIPE". If the task is cancelled while it waits, the data is still
--- written (in order with later writes).
---@param data string
---@return true|nil
---@return string|nil message
---@return string|nil code
function Stream:write(data)
  check_stream(self, "write")
  local t = type(data)
  if t == "number" then
    data = tostring(data)
  elseif t ~= "string" then
    argerror(1, "write", "string expected, got " .. t)
  end
  local done, msg, code = self.h:write(data, self.on_write)
  if done then return true end
  if done == nil then return nil, msg, code end
  -- queued: its completion comes through on_write, in order
  local q = self.writes
  local entry = {}
  local tail = q.tail + 1
  q.tail = tail
  q[tail] = entry
  local task, token = sched.prepare("write")
  entry.task, entry.token = task, token
  sched.suspend(task)
  return entry.ok, entry.msg, entry.code
end

--- Shuts the write side down (the peer reads the end of the stream) once
--- queued writes are done. Returns true, or nil, msg, code.
---@return true|nil
---@return string|nil message
---@return string|nil code
function Stream:shutdown()
  check_stream(self, "shutdown")
  local task, token = sched.prepare("shutdown")
  local ok, msg, code
  local started, m, c = self.h:shutdown(function(x, y, z)
    ok, msg, code = x, y, z
    task.sched:wake(task, token)
  end)
  if not started then return nil, m, c end
  sched.suspend(task)
  return ok, msg, code
end

--- Closes the stream at once (never waits). A task waiting to read gets
--- nil, "ECANCELED: ...", "ECANCELED"; so do queued writes. Idempotent.
function Stream:close()
  if self.closed then return end
  self.closed = true
  self.reading = false
  self.h:close()
  if not self.err_code then
    self.err_msg, self.err_code = CLOSED_MSG, CLOSED_CODE
  end
  local reader = self.reader
  if reader then
    self.reader = nil
    reader.sched:wake(reader, self.reader_token)
  end
end
Stream.__close = Stream.close

--- Whether close() was called.
---@return boolean
function Stream:is_closed() return self.closed end

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

local function connect_one(a)
  local task, token = sched.prepare("aio.tcp.connect")
  local sch = task.sched
  local h = core.tcp_new()
  local ok, msg, code
  local started, m, c = h:connect(a.addr, a.port, function(x, y, z)
    ok, msg, code = x, y, z
    sch:wake(task, token)
  end)
  if not started then
    h:close()
    return nil, m, c
  end
  local waited, err = ypcall(sched.suspend, task, function() h:close() end)
  if not waited then
    h:close()
    error(err, 0)
  end
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
local function run_handler(self, stream)
  local me = sched.current
  local ok, err = yxpcall(self.handler, handler_traceback, stream)
  stream:close()
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
