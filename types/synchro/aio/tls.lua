---@meta synchro.aio.tls

---@class synchro.aio.tls
---@field Stream synchro.tls.Stream the class of TLS streams
---@field Server synchro.tls.Server the class of TLS servers
local tls = {}

--- The options of tls.connect, tls.wrap and tls.listen (docs/aio-tls.md).
---@class synchro.tls.Options
---@field cafile string? PEM file of trusted CAs (a client's default: the
--- system's store; a server given one requires client certificates)
---@field verify boolean? client: verify the server's certificate and name (default true)
---@field servername string? client: the name to verify and send as SNI (default: host)
---@field alpn (string|string[])? protocols, in order of preference
---@field cert string? PEM certificate chain (a server's, or a client's)
---@field key string? the key of cert
---@field timeout number? seconds for the handshake (listen: default 30)
---@field server boolean? wrap: be the server side
---@field backlog integer? listen: as tcp.listen
---@field ipv6only boolean? listen: as tcp.listen

--- What TLS knows about a connection.
---@class synchro.tls.Info
---@field version string "TLSv1.3" or "TLSv1.2"
---@field cipher string?
---@field alpn string? the protocol agreed, if any
---@field peer string? the subject of the peer's certificate
---@field verified boolean the peer's certificate was verified

--- Connects to `host` and `port` and runs a TLS handshake; the peer's
--- certificate is verified (against `opts.cafile`, or the system's CA
--- store) and must be for `opts.servername` (default: host), unless
--- `opts.verify` is false. `opts.timeout` bounds connect and handshake.
--- Returns a TLS stream, or nil, msg, code ("ECERT", "ETLS",
--- "ETIMEDOUT", ...).
---@param host string
---@param port integer
---@param opts synchro.tls.Options|nil
---@return synchro.tls.Stream|nil
---@return string|nil message
---@return string|nil code
function tls.connect(host, port, opts) end

--- Starts TLS on an open stream (STARTTLS): a client by default (it
--- needs `servername` to verify), a server with `server = true`, `cert`
--- and `key`. `s` is closed from then on; bytes it had buffered start
--- the handshake. Returns a TLS stream, or nil, msg, code.
---@param s synchro.aio.Stream
---@param opts synchro.tls.Options|nil
---@return synchro.tls.Stream|nil
---@return string|nil message
---@return string|nil code
function tls.wrap(s, opts) end

--- Listens for TLS connections with `opts.cert` and `opts.key`; each runs
--- its handshake (bounded by `opts.timeout`, default 30 s), then
--- `handler(stream)` in a task of its own. Without a handler, call
--- server:accept(). Returns a server, or nil, msg, code.
---@param host string
---@param port integer
---@param opts synchro.tls.Options
---@param handler (async fun(stream: synchro.tls.Stream))|nil
---@return synchro.tls.Server|nil
---@return string|nil message
---@return string|nil code
function tls.listen(host, port, opts, handler) end

--- OpenSSL's version text.
---@return string
function tls.openssl_version() end

---@class synchro.tls.Stream: synchro.aio.Stream
local Stream = {}

--- Reads up to `n` bytes (default: all that is buffered), waiting for data
--- if none is buffered. Returns nil at the end of the stream, or nil,
--- "ECONNRESET: ...", "ECONNRESET" on an error.
---@param n integer|nil
---@return string|nil data
---@return string|nil message
---@return string|nil code
function Stream:read(n) end

--- Reads one line and returns it without its "\n" (or "\r\n"). At the end
--- of the stream, a last line without "\n" is returned, then nil.
---@return string|nil line
---@return string|nil message
---@return string|nil code
function Stream:read_line() end

--- An iterator over the lines (as read_line returns them), for
--- `for line in s:lines() do ... end`; it raises on an I/O error.
---@param opts {keep_newline: boolean?}|nil
---@return fun(): string|nil
function Stream:lines(opts) end

--- Reads until the end of the stream and returns everything (maybe ""),
--- or nil, msg, code on an error.
---@return string|nil data
---@return string|nil message
---@return string|nil code
function Stream:read_all() end

--- Reads up to `delim` and returns the data before it; `delim` is
--- consumed. If the stream ends first: nil, "EOF: ...", "EOF" (what was
--- read stays buffered).
---@param delim string
---@return string|nil data
---@return string|nil message
---@return string|nil code
function Stream:read_until(delim) end

--- Reads exactly `n` bytes. If the stream ends first: nil, "EOF:
--- connection closed after k of n bytes", "EOF" (the k bytes stay
--- buffered).
---@param n integer
---@return string|nil data
---@return string|nil message
---@return string|nil code
function Stream:read_exactly(n) end

--- The number of bytes read from the socket and not yet consumed.
---@return integer
function Stream:buffered() end

--- Writes `data`; returns once all of it is written (to the kernel), so a
--- slow reader slows the writer down. Returns true, or nil, "EPIPE: ...",
--- "EPIPE". If the task is cancelled while it waits, the data is still
--- written (in order with later writes).
---@param data string
---@return true|nil
---@return string|nil message
---@return string|nil code
function Stream:write(data) end

--- Shuts the write side down (the peer reads the end of the stream) once
--- queued writes are done. Returns true, or nil, msg, code.
---@return true|nil
---@return string|nil message
---@return string|nil code
function Stream:shutdown() end

--- Closes the stream at once (never waits). A task waiting to read gets
--- nil, "ECANCELED: ...", "ECANCELED"; so do queued writes. Idempotent.
function Stream:close() end

--- Whether close() was called.
---@return boolean
function Stream:is_closed() end

--- Details of the connection: version, cipher, alpn, peer, verified.
---@return synchro.tls.Info
function Stream:info() end

--- The protocol ALPN agreed on, or nil.
---@return string|nil
function Stream:alpn() end

--- Turns Nagle's algorithm off (true) or on, on the TCP connection.
---@param enable boolean
---@return true|nil
---@return string|nil message
---@return string|nil code
function Stream:nodelay(enable) end

--- The peer's address and port (of the TCP connection under TLS).
---@return string|nil addr
---@return integer|string port, or the error message
function Stream:peername() end

--- The local address and port (of the TCP connection under TLS).
---@return string|nil addr
---@return integer|string port, or the error message
function Stream:sockname() end

---@class synchro.tls.Server
local Server = {}

--- Waits for the next connection and runs its handshake (a server
--- without a handler). Returns a TLS stream, or nil, msg, code.
---@return synchro.tls.Stream|nil
---@return string|nil message
---@return string|nil code
function Server:accept() end

--- The port the server listens on.
---@return integer
function Server:port() end

--- The address and port the server listens on.
---@return string|nil addr
---@return integer|string port, or the error message
function Server:sockname() end

--- Stops accepting and cancels the handlers still running. Never waits.
function Server:close() end

--- The number of connections still being handled.
---@return integer
function Server:connections() end

return tls
