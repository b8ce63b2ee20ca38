--- synchro.aio.stream: the one buffered stream under TCP, pipes, TTYs
--- (and TLS), for async code on a synchronizer's loop.
---
--- Back pressure, one rule for every transport: a stream reads from the
--- kernel only while a task waits for data, so data nobody reads stays
--- in the kernel and slows the peer down. A write returns once the
--- kernel took all of it. Cancelling a task that waits in a read leaves
--- buffered data in place; a cancelled write is still written, in order.
local sched = require "synchro.sched"
local check = require "synchro.check"
local await = require("synchro.aio.request").await

local concat = table.concat
local type, tostring, setmetatable, getmetatable, error, pairs =
  type, tostring, setmetatable, getmetatable, error, pairs
local argerror, check_opts = check.argerror, check.opts

local M = {}

local CLOSED_MSG, CLOSED_CODE = "ECANCELED: operation canceled", "ECANCELED"

-- The metatables of stream classes (Stream and its subclasses).
local classes = setmetatable({}, { __mode = "k" })

---@class synchro.aio.Stream
local Stream = {}
Stream.__index = Stream
M.Stream = Stream
classes[Stream] = true

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

-- Wakes the task waiting for data, if any.
local function wake_reader(self)
  local reader = self.reader
  if reader then
    self.reader = nil
    reader.sched:wake(reader, self.reader_token)
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
    -- nothing more will come: a stream that cannot write frees its
    -- handle now and keeps what is buffered
    if not self.writable and not self.released then
      self.released = true
      self.h:close()
    end
  end
  wake_reader(self)
  if self.reader == nil then stop_reading(self) end
end

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
function M.new(h, class, opts)
  opts = opts or {}
  local self = setmetatable({
    h = h,
    chunks = {}, first = 1, last = 0, size = 0,
    reading = false, eof = false, closed = false,
    readable = opts.readable ~= false, writable = opts.writable ~= false,
  }, class or Stream)
  self.on_read = function(data, msg, code)
    return on_read(self, data, msg, code)
  end
  self.cancel_read = function()
    self.reader = nil
    stop_reading(self)
  end
  return self
end

--- Makes a subclass of Stream (for a transport's own methods, such as
--- TCP's nodelay); its streams are accepted by every Stream method.
---@param methods table
---@return table class
function M.class(methods)
  -- Stream's methods are copied, not inherited: one lookup per call.
  for k, v in pairs(Stream) do
    if methods[k] == nil then methods[k] = v end
  end
  methods.__index = methods
  classes[methods] = true
  return methods
end

--- Whether x is a stream (of any transport).
---@param x any
---@return boolean
function M.is_stream(x)
  return classes[getmetatable(x)] == true
end

local function check_stream(self, name, side)
  if not classes[getmetatable(self)] then
    argerror(1, name, "stream expected, got " .. type(self), 3)
  end
  if self.closed then argerror(1, name, "stream is closed", 3) end
  if side == "read" and not self.readable then
    argerror(1, name, "stream is not readable", 3)
  elseif side == "write" and not self.writable then
    argerror(1, name, "stream is not writable", 3)
  end
end
M.check = check_stream

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
  check_stream(self, "read", "read")
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

--- Reads one line and returns it without its end ("\n" or "\r\n"; with
--- `opts.keep_newline`, the end is kept as it came). At the end of the
--- stream, a last line without "\n" is returned, then nil; on an error,
--- nil, msg, code.
---@param opts {keep_newline: boolean?}|nil
---@return string|nil line
---@return string|nil message
---@return string|nil code
function Stream:read_line(opts)
  check_stream(self, "read_line", "read")
  local keep = check_opts(opts, 1, "read_line", { "keep_newline" })
    .keep_newline
  local a = read_to(self, "\n", "read_line")
  if a then
    local line = take(self, a)
    if keep then return line end
    if a > 1 and line:byte(a - 1) == 13 then return line:sub(1, a - 2) end
    return line:sub(1, a - 1)
  end
  if self.err_code then return nil, self.err_msg, self.err_code end
  if self.size > 0 then return take_all(self) end
  return nil
end

--- An iterator over the lines (as read_line returns them), for
--- `for line in s:lines() do ... end`; it raises on an I/O error.
---@param opts {keep_newline: boolean?}|nil
---@return fun(): string|nil
function Stream:lines(opts)
  check_stream(self, "lines", "read")
  check_opts(opts, 1, "lines", { "keep_newline" })
  return function()
    local line, msg = self:read_line(opts)
    if line == nil and msg then error(msg, 2) end
    return line
  end
end

--- Reads until the end of the stream and returns everything (maybe ""),
--- or nil, msg, code on an error.
---@return string|nil data
---@return string|nil message
---@return string|nil code
function Stream:read_all()
  check_stream(self, "read_all", "read")
  local parts = {}
  while true do
    if self.size > 0 then parts[#parts + 1] = take_all(self) end
    if self.err_code then return nil, self.err_msg, self.err_code end
    if self.eof then return concat(parts) end
    fill(self, "read_all")
  end
end

--- Reads up to `delim` and returns the data before it; `delim` is
--- consumed. If the stream ends first: nil, "EOF: ...", "EOF" (what was
--- read stays buffered).
---@param delim string
---@return string|nil data
---@return string|nil message
---@return string|nil code
function Stream:read_until(delim)
  check_stream(self, "read_until", "read")
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
  check_stream(self, "read_exactly", "read")
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

-- Starters for request.await (not tail calls, so that argument errors
-- name the method).
local function start_write(cb, h, data)
  local r, m, c = h:write(data, cb)
  return r, m, c
end
local function start_shutdown(cb, h)
  local r, m, c = h:shutdown(cb)
  return r, m, c
end

--- Writes `data`; returns once all of it is written (to the kernel), so a
--- slow reader slows the writer down. Returns true, or nil, "EPIPE: ...",
--- "EPIPE". If the task is cancelled while it waits, the data is still
--- written (in order with later writes).
---@param data string
---@return true|nil
---@return string|nil message
---@return string|nil code
function Stream:write(data)
  check_stream(self, "write", "write")
  local t = type(data)
  if t == "number" then
    data = tostring(data)
  elseif t ~= "string" then
    argerror(1, "write", "string expected, got " .. t)
  end
  -- true (written at once), nil, msg, code, or a queued write awaited
  return await("write", start_write, nil, nil, self.h, data)
end

--- Shuts the write side down (the peer reads the end of the stream) once
--- queued writes are done. Returns true, or nil, msg, code.
---@return true|nil
---@return string|nil message
---@return string|nil code
function Stream:shutdown()
  check_stream(self, "shutdown", "write")
  return await("shutdown", start_shutdown, nil, nil, self.h)
end

--- Closes the stream at once (never waits). A task waiting to read gets
--- nil, "ECANCELED: ...", "ECANCELED"; so do queued writes. Idempotent.
function Stream:close()
  if not classes[getmetatable(self)] then
    argerror(1, "close", "stream expected, got " .. type(self))
  end
  if self.closed then return end
  self.closed = true
  self.reading = false
  if not self.released then self.h:close() end
  if not self.err_code then
    self.err_msg, self.err_code = CLOSED_MSG, CLOSED_CODE
  end
  wake_reader(self)
end
Stream.__close = Stream.close

--- Whether close() was called.
---@return boolean
function Stream:is_closed() return self.closed end

--- Takes the handle away from stream `s` for a layer above it (TLS on
--- an open stream): returns the handle and the bytes `s` had buffered
--- but not yet returned; `s` is then closed without closing the handle.
--- Writes already queued complete on the handle, in order. Raises if a
--- task is reading from `s`.
---@param s synchro.aio.Stream
---@param name string the caller's name, for errors
---@return any handle
---@return string buffered
function M.detach(s, name)
  check_stream(s, name)
  if s.reader then
    argerror(1, name, "a task is reading from this stream", 3)
  end
  if s.released then argerror(1, name, "stream has ended", 3) end
  stop_reading(s)
  local buffered = s.size > 0 and take_all(s) or ""
  s.closed, s.released = true, true
  s.err_msg, s.err_code = CLOSED_MSG, CLOSED_CODE
  return s.h, buffered
end


-- stdin and TTYs ----------------------------------------------------------

--- A TTY stream: the one stream plus the terminal's own methods.
---@class synchro.aio.Tty: synchro.aio.Stream
local Tty = M.class({})
M.Tty = Tty

--- Turns raw mode on (true: bytes arrive as typed, no echo, Ctrl-C is
--- the byte "\3" rather than SIGINT) or off. Closing the stream (or its
--- synchronizer, or the process's exit) restores the mode.
---@param raw boolean
---@return true|nil
---@return string|nil message
---@return string|nil code
function Tty:set_raw(raw)
  check_stream(self, "set_raw")
  if type(raw) ~= "boolean" then
    argerror(1, "set_raw", "boolean expected, got " .. type(raw))
  end
  return self.h:set_mode(raw)
end

--- The terminal's width and height in characters.
---@return integer|nil width
---@return integer|string height, or the error message
---@return string|nil code
function Tty:winsize()
  check_stream(self, "winsize")
  return self.h:winsize()
end

local stdin_stream

--- A read-only stream on this process's fd 0 (a pipe or a TTY, which
--- is then a synchro.aio.Tty); the same stream on every call while it is
--- open. A regular file or /dev/null cannot be streamed: nil, "EINVAL:
--- ...", "EINVAL" (read it with aio.fs).
---@return synchro.aio.Stream|synchro.aio.Tty|nil
---@return string|nil message
---@return string|nil code
function M.stdin()
  if stdin_stream and not stdin_stream.closed then return stdin_stream end
  local h, kind, code = require("synchro.core").stdio_stream(0)
  if not h then return nil, kind, code end
  stdin_stream = M.new(h, kind == "tty" and Tty or Stream,
    { writable = false })
  return stdin_stream
end

return M
