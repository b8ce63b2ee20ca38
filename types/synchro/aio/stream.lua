---@meta synchro.aio.stream

--- The one buffered stream under TCP, pipes and TTYs.
---@class synchro.aio.stream
---@field Stream synchro.aio.Stream the class of streams
---@field Tty synchro.aio.Tty the class of terminal streams
---@field check fun(x: any, n: integer, name: string): synchro.aio.Stream
--- (raises unless x is an open stream)
local M = {}

---@class synchro.aio.Stream
local Stream = {}

---@class synchro.aio.Tty: synchro.aio.Stream
local Tty = {}

--- Makes a buffered stream on `h`, a stream object of synchro.core (TCP,
--- pipe or TTY) or anything with the same methods (TLS). `class` is
--- Stream or a subclass made with stream.class(); `opts.readable` and
--- `opts.writable` (default true) say which side exists (a child's stdin
--- is not readable). A stream that cannot write releases its handle once
--- it has read the end.
---@param h any
---@param class table|nil
---@param opts {readable: boolean?, writable: boolean?}|nil
---@return synchro.aio.Stream
function M.new(h, class, opts) end

--- Makes a subclass of Stream (for a transport's own methods, such as
--- TCP's nodelay); its streams are accepted by every Stream method.
---@param methods table
---@return table class
function M.class(methods) end

--- Whether x is a stream (of any transport).
---@param x any
---@return boolean
function M.is_stream(x) end

--- Takes the handle away from stream `s` for a layer above it (TLS on an
--- open stream): returns the handle and the bytes `s` had buffered; `s`
--- is then closed without closing the handle. Raises if a task is
--- reading from `s`.
---@param s synchro.aio.Stream
---@param name string the caller's name, for errors
---@return any handle
---@return string buffered
function M.detach(s, name) end

--- A read-only stream on this process's fd 0 (a pipe or a TTY, which
--- is then a synchro.aio.Tty); the same stream on every call while it is
--- open. A regular file or /dev/null cannot be streamed: nil, "EINVAL:
--- ...", "EINVAL" (read it with aio.fs).
---@return synchro.aio.Stream|synchro.aio.Tty|nil
---@return string|nil message
---@return string|nil code
function M.stdin() end

--- An iterator over the lines (as read_line returns them), for
--- `for line in s:lines() do ... end`; it raises on an I/O error.
---@param opts {keep_newline: boolean?}|nil
---@return fun(): string|nil
function Stream:lines(opts) end

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

--- Shuts the write side down (the peer reads the end of the stream) once
--- queued writes are done. Returns true, or nil, msg, code.
---@return true|nil
---@return string|nil message
---@return string|nil code
function Stream:shutdown() end

--- Whether close() was called.
---@return boolean
function Stream:is_closed() end

--- Turns raw mode on (true: bytes arrive as typed, no echo, Ctrl-C is
--- the byte "\3" rather than SIGINT) or off. Closing the stream (or its
--- synchronizer, or the process's exit) restores the mode.
---@param raw boolean
---@return true|nil
---@return string|nil message
---@return string|nil code
function Tty:set_raw(raw) end

--- The terminal's width and height in characters.
---@return integer|nil width
---@return integer|string height, or the error message
---@return string|nil code
function Tty:winsize() end

return M
