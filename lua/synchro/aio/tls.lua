--- synchro.aio.tls: TLS (OpenSSL 3) for async code on a synchronizer's
--- loop, over the one stream (synchro.aio.stream).
---
--- Where it lives: C (src/aio/tls.c) holds an OpenSSL session on memory
--- BIOs and never touches a socket. This module moves the ciphertext over
--- the transport's own stream handle (TCP, a pipe, another TLS stream)
--- and gives the buffered stream a handle with the same methods as a
--- socket's, so read, read_line, read_exactly, read_until, lines, write,
--- shutdown, close, cancellation and back pressure are those of every
--- stream.
---
--- Certificates and host names are verified by default (the system's CA
--- store unless `cafile` is given). I/O and TLS failures return
--- `nil, msg, code`: "ECERT" when the peer's certificate does not
--- verify, "ETLS" for other TLS errors, "ECONNRESET" for a peer that
--- closed without close_notify, "ETIMEDOUT" for a handshake timeout;
--- misuse raises.
local core = require "synchro.core"
if core.tls_session == nil then
  error("synchro.aio.tls is not available: synchro was built without " ..
    "OpenSSL 3 (install libssl-dev on Debian, then rebuild)", 2)
end
local sched = require "synchro.sched"
local check = require "synchro.check"
local stream = require "synchro.aio.stream"
local tcp = require "synchro.aio.tcp"

local ypcall, yxpcall = sched.yieldable_pcalls()
local traceback = debug.traceback
local type, tostring, setmetatable, getmetatable, error =
  type, tostring, setmetatable, getmetatable, error
local concat, char = table.concat, string.char
local argerror, check_type, check_port, check_opts =
  check.argerror, check.type, check.port, check.opts

local tls = {}

-- Contexts ----------------------------------------------------------------

-- One OpenSSL context per set of options, kept while a connection or a
-- server uses it (the CA store is read once, not per connection).
local contexts = setmetatable({}, { __mode = "v" })

local function alpn_wire(alpn, n, name)
  if alpn == nil then return nil end
  local list = alpn
  if type(alpn) == "string" then list = { alpn } end
  if type(list) ~= "table" then
    argerror(n, name, "alpn: string or list of strings expected, got " ..
      type(alpn))
  end
  local parts = {}
  for i = 1, #list do
    local p = list[i]
    if type(p) ~= "string" or #p == 0 or #p > 255 then
      argerror(n, name, "alpn: protocol names must be strings of 1 to " ..
        "255 bytes")
    end
    parts[i] = char(#p) .. p
  end
  if #parts == 0 then argerror(n, name, "alpn: empty list") end
  return concat(parts)
end

local function opt_string(v, n, name, what)
  if v ~= nil and type(v) ~= "string" then
    argerror(n, name, what .. ": string expected, got " .. type(v))
  end
  return v
end

-- Checks the options every mode shares; returns the context, or nil,
-- msg, code when OpenSSL rejects a file.
local function context(server, opts, n, name)
  local cafile = opt_string(opts.cafile, n, name, "cafile")
  local cert = opt_string(opts.cert, n, name, "cert")
  local key = opt_string(opts.key, n, name, "key")
  local verify = opts.verify
  if verify ~= nil and type(verify) ~= "boolean" then
    argerror(n, name, "verify: boolean expected, got " .. type(verify))
  end
  if server then
    if cert == nil or key == nil then
      argerror(n, name, "cert and key are needed to serve TLS")
    end
    -- a server checks client certificates only when given their CA
    if verify == nil then verify = cafile ~= nil end
    if verify and cafile == nil then
      argerror(n, name, "verify: a server needs cafile= to verify clients")
    end
  else
    if (cert == nil) ~= (key == nil) then
      argerror(n, name, "cert and key go together")
    end
    if verify == nil then verify = true end
  end
  local alpn = alpn_wire(opts.alpn, n, name)
  local id = concat({ server and "s" or "c", verify and "v" or "-",
    cafile or "", cert or "", key or "", alpn or "" }, "\0")
  local ctx = contexts[id]
  if ctx then return ctx, verify end
  local msg, code
  ctx, msg, code = core.tls_context(server, verify, cafile, cert, key, alpn)
  if not ctx then return nil, msg, code end
  contexts[id] = ctx
  return ctx, verify
end

-- The handle under a TLS stream ---------------------------------------------

-- It has the methods stream.lua calls on a socket's handle (read_start,
-- read_stop, write, shutdown, close, ...), done with the session over
-- `raw`, the transport's handle.
local Handle = {}
Handle.__index = Handle

local function noop() end

-- Sends what the session has for the peer; a failure shows on the next
-- read or write.
local function flush(self)
  local out = self.s:take()
  if out then self.raw:write(out, noop) end
end

-- Hands the plaintext the session can give to self.fn, and the end.
local function deliver(self)
  local s = self.s
  while not self.closed do
    local data, msg, code = s:read()
    if data then
      self.fn(data)
    elseif data == false then
      break
    else
      self.ended = true
      self.raw:read_stop()
      self.fn(nil, msg, code)
      break
    end
  end
  if not self.closed then flush(self) end
end

local function on_cipher(self, data, msg, code)
  if self.closed or self.ended then return end
  if data then
    self.s:feed(data)
    return deliver(self)
  end
  if code == "EOF" then
    self.s:set_eof()
    deliver(self)
    if self.ended or self.closed then return end
    msg, code = "ECONNRESET: TLS peer closed the connection without " ..
      "close_notify", "ECONNRESET"
  end
  self.ended = true
  self.fn(nil, msg, code)
end

local function new_handle(raw, session, ctx)
  local self = setmetatable({ raw = raw, s = session, ctx = ctx,
    closed = false, ended = false, established = false }, Handle)
  self.on_cipher = function(data, msg, code)
    return on_cipher(self, data, msg, code)
  end
  return self
end

function Handle:read_start(fn)
  self.fn = fn
  return self.raw:read_start(self.on_cipher)
end

function Handle:read_stop() self.raw:read_stop() end

function Handle:write(data, cb)
  -- as on a socket whose write side is shut
  if self.shut then return nil, "EPIPE: broken pipe", "EPIPE" end
  local out, msg, code = self.s:write(data)
  if not out then return nil, msg, code end
  if out == "" then return true end
  return self.raw:write(out, cb)
end

function Handle:shutdown(cb)
  self.shut = true
  local out = self.s:shutdown()
  if out then self.raw:write(out, noop) end
  return self.raw:shutdown(cb)
end

-- Sends close_notify if it can go at once, then closes; never waits.
function Handle:close()
  if self.closed then return end
  self.closed = true
  if self.established then
    local out = self.s:shutdown()
    if out then self.raw:write(out, noop) end
  end
  self.raw:close()
  self.s:close()
end

function Handle:write_queue_size() return self.raw:write_queue_size() end

function Handle.kind() return "tls" end

-- The handshake -------------------------------------------------------------

-- Waits for the next chunk of ciphertext: data, or nil, msg, code.
local function await_cipher(self)
  local task, token = sched.prepare("aio.tls handshake")
  local raw = self.raw
  local data, msg, code
  local ok, m, c = raw:read_start(function(x, y, z)
    raw:read_stop()
    data, msg, code = x, y, z
    task.sched:wake(task, token)
  end)
  if not ok then return nil, m, c end
  sched.suspend(task, function() raw:read_stop() end)
  return data, msg, code
end

local HANDSHAKE_EOF = "ECONNRESET: the peer closed the connection " ..
  "during the TLS handshake"

local function handshake(self)
  local s = self.s
  while true do
    local done, msg, code = s:handshake()
    -- also an alert that tells the peer why it failed
    flush(self)
    if done then return true end
    if done == nil then return nil, msg, code end
    local data, m, c = await_cipher(self)
    if data then
      s:feed(data)
    elseif c == "EOF" then
      s:set_eof()
      done, msg, code = s:handshake()
      if done == nil and code ~= "ECONNRESET" then
        return nil, msg, code
      end
      return nil, HANDSHAKE_EOF, "ECONNRESET"
    else
      return nil, m, c
    end
  end
end

--- A TLS stream: the one buffered stream (synchro.aio.Stream) plus what
--- TLS knows about the connection.
---@class synchro.tls.Stream: synchro.aio.Stream
local Stream = stream.class({})
tls.Stream = Stream

-- Runs the handshake on raw (buffered: ciphertext already read) and
-- returns a TLS stream, or closes raw and returns nil, msg, code.
local function establish(raw, buffered, ctx, host, servername)
  local self = new_handle(raw, core.tls_session(ctx, host, servername), ctx)
  if buffered ~= "" then self.s:feed(buffered) end
  local ok, done, msg, code = ypcall(handshake, self)
  if not ok or not done then
    self:close()
    if not ok then error(done, 0) end
    return nil, msg, code
  end
  self.established = true
  local st = stream.new(self, Stream)
  -- what came with the end of the handshake goes to the buffer
  self.fn = st.on_read
  deliver(self)
  return st
end

local function with_timeout(seconds, fn, ...)
  if seconds == nil then return fn(...) end
  local st, msg, code = sched.timeout(seconds, fn, ...)
  if st == nil and code == "ETIMEDOUT" then
    msg = ("ETIMEDOUT: TLS handshake timed out after %g s"):format(seconds)
  end
  return st, msg, code
end

local function is_ip(host)
  return host:find("^%d+%.%d+%.%d+%.%d+$") ~= nil or
    host:find(":", 1, true) ~= nil
end

-- Client side: the name to verify and the SNI name to send.
local function client_names(host, verify, servername, n, name)
  if servername ~= nil and (type(servername) ~= "string" or
      servername == "") then
    argerror(n, name, "servername: non-empty string expected, got " ..
      (type(servername) == "string" and "an empty string" or
        type(servername)))
  end
  local want = servername or host
  if want and (want:find("\0", 1, true) or #want > 253) then
    argerror(n, name, "bad host name for TLS (a NUL byte, or longer " ..
      "than 253 bytes)")
  end
  if want == nil then
    if verify then
      argerror(n, name, "servername is needed to verify the peer's " ..
        "certificate (or verify=false)")
    end
    return nil, nil
  end
  return verify and want or nil, (not is_ip(want)) and want or nil
end

local CONNECT_OPTS = { "cafile", "verify", "servername", "alpn", "timeout",
  "cert", "key" }

local function connect(host, port, ctx, vhost, sni)
  local conn, msg, code = tcp.connect(host, port)
  if not conn then return nil, msg, code end
  -- TLS writes whole records; Nagle would hold the first write after the
  -- handshake for the peer's delayed ACK
  conn:nodelay(true)
  local raw, buffered = stream.detach(conn, "connect")
  return establish(raw, buffered, ctx, vhost, sni)
end

--- Connects to `host` and `port` and runs a TLS handshake. The peer's
--- certificate must verify against `opts.cafile` (a PEM file; default:
--- the system's CA store) and be for `opts.servername` (default: host),
--- which is also sent as SNI (unless it is an IP address), unless
--- `opts.verify` is false. `opts.alpn`: a protocol name or a list, in
--- order of preference (see stream:info().alpn). `opts.cert`/`opts.key`:
--- a client certificate. `opts.timeout` (seconds) bounds connect and
--- handshake together. Returns a TLS stream, or nil, msg, code
--- ("ECERT: certificate verify failed: ...", "ETIMEDOUT", ...).
---@param host string
---@param port integer
---@param opts synchro.tls.Options|nil
---@return synchro.tls.Stream|nil
---@return string|nil message
---@return string|nil code
function tls.connect(host, port, opts)
  check_type(host, "string", 1, "connect")
  check_port(port, 2, "connect")
  opts = check_opts(opts, 3, "connect", CONNECT_OPTS)
  local timeout = check.time(opts.timeout, 3, "connect", "timeout")
  local ctx, verify, code = context(false, opts, 3, "connect")
  if not ctx then return nil, verify, code end
  local vhost, sni = client_names(host, verify, opts.servername, 3,
    "connect")
  sched.task("aio.tls.connect")
  return with_timeout(timeout, connect, host, port, ctx, vhost, sni)
end

local WRAP_OPTS = { "server", "cafile", "verify", "servername", "alpn",
  "timeout", "cert", "key" }

--- Starts TLS on an open stream (STARTTLS): as a client by default, as a
--- server with `opts.server = true` (and `cert`, `key`). The options are
--- those of tls.connect (a client needs `servername` to verify the peer)
--- and of tls.listen. Bytes the stream had buffered are the start of the
--- handshake. `s` is closed from then on (the TLS stream owns its
--- connection), and so is the connection if the handshake fails.
--- Returns a TLS stream, or nil, msg, code.
---@param s synchro.aio.Stream
---@param opts synchro.tls.Options|nil
---@return synchro.tls.Stream|nil
---@return string|nil message
---@return string|nil code
function tls.wrap(s, opts)
  if not stream.is_stream(s) then
    argerror(1, "wrap", "stream expected, got " .. type(s))
  end
  opts = check_opts(opts, 2, "wrap", WRAP_OPTS)
  local server = opts.server
  if server ~= nil and type(server) ~= "boolean" then
    argerror(2, "wrap", "server: boolean expected, got " .. type(server))
  end
  local timeout = check.time(opts.timeout, 2, "wrap", "timeout")
  local vhost, sni
  if server then
    if opts.servername ~= nil then
      argerror(2, "wrap", "servername: a client option")
    end
  end
  local ctx, verify, code = context(server, opts, 2, "wrap")
  if not server then
    vhost, sni = client_names(nil, ctx and verify, opts.servername, 2,
      "wrap")
  end
  sched.task("aio.tls.wrap")
  local raw, buffered = stream.detach(s, "wrap")
  if not ctx then
    raw:close()
    return nil, verify, code
  end
  return with_timeout(timeout, establish, raw, buffered, ctx, vhost, sni)
end

--- Details of the connection: `version` ("TLSv1.3"), `cipher`, `alpn`
--- (the protocol agreed, if any), `peer` (the subject of the peer's
--- certificate, if it sent one) and `verified` (it was verified).
---@return synchro.tls.Info
function Stream:info()
  stream.check(self, "info")
  return self.h.s:info()
end

--- The protocol ALPN agreed on, or nil.
---@return string|nil
function Stream:alpn()
  stream.check(self, "alpn")
  return self.h.s:info().alpn
end

--- The peer's address and port (of the TCP connection under TLS).
---@return string|nil addr
---@return integer|string port, or the error message
function Stream:peername()
  stream.check(self, "peername")
  return self.h.raw:peername()
end

--- The local address and port (of the TCP connection under TLS).
---@return string|nil addr
---@return integer|string port, or the error message
function Stream:sockname()
  stream.check(self, "sockname")
  return self.h.raw:sockname()
end

--- Turns Nagle's algorithm off (true) or on, on the TCP connection.
---@param enable boolean
---@return true|nil
---@return string|nil message
---@return string|nil code
function Stream:nodelay(enable)
  stream.check(self, "nodelay")
  return self.h.raw:nodelay(enable)
end

-- Servers -----------------------------------------------------------------

---@class synchro.tls.Server
local Server = {}
Server.__index = Server
tls.Server = Server

local function accept_tls(self, conn, name)
  conn:nodelay(true)
  local raw, buffered = stream.detach(conn, name)
  return with_timeout(self.timeout, establish, raw, buffered, self.ctx)
end

local function handler_traceback(err)
  if type(err) ~= "string" then return err end
  return traceback(err, 2)
end

-- The task of one connection: the handshake, the handler, the close. A
-- failed handshake is the client's problem: the connection just ends.
local function run_handler(self, conn)
  local st = accept_tls(self, conn, "listen")
  if not st then return end
  local ok, err = yxpcall(self.handler, handler_traceback, st)
  st:close()
  if not ok then
    if sched.is_cancelled(err) then error(err, 0) end
    io.stderr:write(("synchro: tls server on port %s: connection " ..
      "handler failed: %s\n"):format(tostring(self.port_number),
      tostring(err)))
  end
end

local LISTEN_OPTS = { "cert", "key", "cafile", "verify", "alpn", "timeout",
  "backlog", "ipv6only" }

--- Listens on `host` and `port` (0: any free port) for TLS connections,
--- with `opts.cert` (a PEM chain) and `opts.key` (its key). Each
--- connection runs the handshake, bounded by `opts.timeout` (seconds,
--- default 30), then `handler(stream)` in a task of its own; the stream
--- is closed when the handler returns. A connection whose handshake fails
--- is closed. Without a handler, call server:accept(). `opts.cafile`:
--- clients must present a certificate from that CA. `opts.alpn`: the
--- protocols accepted, in order of preference. `backlog`, `ipv6only`:
--- as tcp.listen. Returns a server, or nil, msg, code (a file OpenSSL
--- rejects, a key that does not match its cert, an address in use).
---@param host string
---@param port integer
---@param opts synchro.tls.Options
---@param handler (async fun(stream: synchro.tls.Stream))|nil
---@return synchro.tls.Server|nil
---@return string|nil message
---@return string|nil code
function tls.listen(host, port, opts, handler)
  check_type(host, "string", 1, "listen")
  check_port(port, 2, "listen")
  if opts == nil then argerror(3, "listen", "options with cert and key " ..
    "expected, got nil") end
  opts = check_opts(opts, 3, "listen", LISTEN_OPTS)
  if handler ~= nil then check_type(handler, "function", 4, "listen") end
  local timeout = 30
  if opts.timeout ~= nil then
    timeout = check.time(opts.timeout, 3, "listen", "timeout")
  end
  local ctx, msg, code = context(true, opts, 3, "listen")
  if not ctx then return nil, msg, code end
  local self = setmetatable({ ctx = ctx, timeout = timeout,
    handler = handler, closed = false }, Server)
  local inner
  if handler then
    inner = function(conn) return run_handler(self, conn) end
  end
  local srv
  srv, msg, code = tcp.listen(host, port, inner,
    { backlog = opts.backlog, ipv6only = opts.ipv6only })
  if not srv then return nil, msg, code end
  self.tcp = srv
  self.port_number = srv:port()
  return self
end

local function check_server(self, name)
  if getmetatable(self) ~= Server then
    argerror(1, name, "server expected, got " .. type(self))
  end
  if self.closed then argerror(1, name, "server is closed") end
end

--- Waits for the next connection and runs its handshake (only for a
--- server without a handler). Returns a TLS stream, or nil, msg, code
--- (the handshake of that connection failed, or the server closed).
---@return synchro.tls.Stream|nil
---@return string|nil message
---@return string|nil code
function Server:accept()
  check_server(self, "accept")
  if self.handler then
    argerror(1, "accept", "this server passes connections to its handler")
  end
  local conn, msg, code = self.tcp:accept()
  if not conn then return nil, msg, code end
  return accept_tls(self, conn, "accept")
end

--- The port the server listens on.
---@return integer
function Server:port()
  check_server(self, "port")
  return self.port_number
end

--- The address and port the server listens on.
---@return string|nil addr
---@return integer|string port, or the error message
function Server:sockname()
  check_server(self, "sockname")
  return self.tcp:sockname()
end

--- The number of connections still being handled.
---@return integer
function Server:connections()
  return self.tcp and self.tcp:connections() or 0
end

--- Stops accepting and cancels the handlers still running (their streams
--- close). Never waits; idempotent.
function Server:close()
  if self.closed then return end
  self.closed = true
  self.tcp:close()
end
Server.__close = Server.close

--- OpenSSL's version text.
---@return string
function tls.openssl_version() return core.tls_version() end

return tls
