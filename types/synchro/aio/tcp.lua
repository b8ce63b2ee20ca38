---@meta synchro.aio.tcp

---@class synchro.aio.tcp
---@field Stream synchro.tcp.Stream the class of streams
---@field Server synchro.tcp.Server the class of servers
local tcp = {}

---@class synchro.tcp.Stream
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

--- Turns Nagle's algorithm off (true) or on.
---@param enable boolean
---@return true|nil
---@return string|nil message
---@return string|nil code
function Stream:nodelay(enable) end

--- Turns TCP keep-alive on (with the initial delay in seconds) or off.
---@param enable boolean
---@param delay integer|nil seconds, default 60
---@return true|nil
---@return string|nil message
---@return string|nil code
function Stream:keepalive(enable, delay) end

--- The peer's address and port.
---@return string|nil addr
---@return integer|string port, or the error message
function Stream:peername() end

--- The local address and port.
---@return string|nil addr
---@return integer|string port, or the error message
function Stream:sockname() end

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
function tcp.connect(host, port, opts) end

---@class synchro.tcp.Server
local Server = {}

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
function tcp.listen(host, port, handler, opts) end

--- Waits for the next connection (only for a server without a handler).
--- Returns a stream, or nil, msg, code (ECANCELED if the server is closed
--- meanwhile). A cancelled accept loses no connection.
---@return synchro.tcp.Stream|nil
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

--- Stops accepting connections and cancels the connection handlers still
--- running (their streams close when they end). Never waits; idempotent.
function Server:close() end

--- The number of connection handlers still running.
---@return integer
function Server:connections() end

return tcp
