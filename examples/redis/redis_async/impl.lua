-- An async Redis client (RESP2) on synchro.aio.tcp. It runs on a
-- synchronizer's loop; redis_async/init.lua wraps it for plain code.
local synchro = require "synchro"
local aio = require "synchro.aio"

local M = {}

local tointeger = math.tointeger or function(x) return x end
local unpack = table.unpack or unpack

-- A server error travels as this table until it is raised to the caller,
-- so that it is told apart from a broken connection.
local ServerError = {}

local function server_error(text)
  return setmetatable({ text = text }, ServerError)
end

local function is_server_error(v) return getmetatable(v) == ServerError end

--- Encodes one command as a RESP2 array of bulk strings.
---@param args table the command and its arguments (with n)
---@return string
local function encode(args)
  local out = { "*" .. args.n .. "\r\n" }
  for i = 1, args.n do
    local a = args[i]
    if type(a) ~= "string" and type(a) ~= "number" then
      error(("bad argument #%d to 'command' (string or number expected, " ..
        "got %s)"):format(i, type(a)), 0)
    end
    a = tostring(a)
    out[#out + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n"
  end
  return table.concat(out)
end

local function io_fail(msg)
  error("redis: " .. tostring(msg or "connection closed by the server"), 0)
end

--- Reads one reply: a server error comes back as a ServerError value;
--- a broken connection raises.
local function read_reply(stream)
  local line, msg = stream:read_line()
  if line == nil then io_fail(msg) end
  local kind, rest = line:sub(1, 1), line:sub(2)
  if kind == "+" then return rest
  elseif kind == "-" then return server_error(rest)
  elseif kind == ":" then return tointeger(tonumber(rest))
  elseif kind == "$" then
    local len = tonumber(rest)
    if len < 0 then return nil end
    local data, err = stream:read_exactly(len + 2)
    if data == nil then io_fail(err) end
    return data:sub(1, len)
  elseif kind == "*" then
    local count = tonumber(rest)
    if count < 0 then return nil end
    local list = { n = count }
    for i = 1, count do list[i] = read_reply(stream) end
    return list
  end
  io_fail("protocol error: unexpected reply " .. ("%q"):format(line))
end

local function raise_if_error(v)
  if is_server_error(v) then error(v.text, 0) end
  return v
end

--- A connection to a Redis server.
---@class redis_async.impl.Conn
local Conn = {}
Conn.__index = Conn

--- Runs fn(stream) alone (fn returns one value) on the connection; if it ends other than by
--- returning (a cancelled call, a broken socket), the connection is out of
--- step with the server and is closed.
local function exclusive(self, fn, ...)
  if self.stream == nil then error("redis: connection is closed", 0) end
  return self.lock:with(function(...)
    if self.stream == nil then error("redis: connection is closed", 0) end
    local ok, result = pcall(fn, self.stream, ...)
    if not ok then
      self:close()
      error(result, 0)
    end
    return result
  end, ...)
end

--- Sends any command; returns its reply (strings, integers, nil, tables
--- for arrays); a server error is raised with the server's text.
---@param ... string|number the command and its arguments
---@return any
function Conn:command(...)
  local args = { n = select("#", ...), ... }
  if args.n == 0 then
    error("bad argument #1 to 'command' (string expected, got no value)", 0)
  end
  local payload = encode(args)
  return raise_if_error(exclusive(self, function(stream)
    local ok, err = stream:write(payload)
    if not ok then io_fail(err) end
    return { read_reply(stream) }
  end)[1])
end

---@param key string
---@return string|nil
function Conn:get(key) return self:command("GET", key) end

---@param key string
---@param value string|number
---@return string "OK"
function Conn:set(key, value, ...) return self:command("SET", key, value, ...) end

---@param ... string keys
---@return integer the number of keys removed
function Conn:del(...) return self:command("DEL", ...) end

---@param key string
---@return integer
function Conn:incr(key) return self:command("INCR", key) end

--- Writes every command at once, then reads every reply. Returns the list
--- of replies (with n: a nil reply leaves a hole). If some replies are
--- server errors, every reply is still read, then the first error raised.
---@param commands table a list of commands, each a list of strings
---@return table
function Conn:pipeline(commands)
  if type(commands) ~= "table" then
    error("bad argument #1 to 'pipeline' (table expected, got " ..
      type(commands) .. ")", 0)
  end
  local parts = {}
  for i, cmd in ipairs(commands) do
    if type(cmd) ~= "table" or cmd[1] == nil then
      error(("bad argument #1 to 'pipeline' (command %d is not a " ..
        "non-empty list)"):format(i), 0)
    end
    parts[i] = encode({ n = #cmd, unpack(cmd) })
  end
  local replies = exclusive(self, function(stream)
    local list = { n = #parts }
    if #parts == 0 then return list end
    local ok, err = stream:write(table.concat(parts))
    if not ok then io_fail(err) end
    for i = 1, #parts do list[i] = read_reply(stream) end
    return list
  end)
  for i = 1, replies.n do raise_if_error(replies[i]) end
  return replies
end

--- Closes the connection (idempotent).
function Conn:close()
  local stream = self.stream
  if stream == nil then return end
  self.stream = nil
  stream:close()
end

Conn.__close = Conn.close

--- Whether close was called (or the connection broke).
---@return boolean
function Conn:is_closed() return self.stream == nil end

-- TCP, or TLS (synchro.aio.tls) when the connection was made with tls=
local function open_stream(host, port, tls)
  if tls == nil then return aio.tcp.connect(host, port, { timeout = 10 }) end
  local opts = { timeout = 10 }
  for k, v in pairs(tls) do opts[k] = v end
  return aio.tls.connect(host, port, opts)
end

--- A generator: subscribes to the channels on a connection of its own and
--- emits (channel, message) for each message published on them, until it
--- is closed (which closes that connection: the server drops the
--- subscription). (For synchro-stubs: a generator's @return lines are
--- what each step gives.)
---@param ... string channels
---@return string channel
---@return string message
Conn.subscribe = synchro.generator(function(self, ...)
  local channels = { n = select("#", ...), ... }
  if channels.n == 0 then
    error("bad argument #1 to 'subscribe' (string expected, got no value)",
      0)
  end
  local stream, msg = open_stream(self.host, self.port, self.tls)
  if not stream then io_fail(msg) end
  local counted = false
  local ok, err = pcall(function()
    local w, werr = stream:write(encode({ n = channels.n + 1, "SUBSCRIBE",
      unpack(channels, 1, channels.n) }))
    if not w then io_fail(werr) end
    for _ = 1, channels.n do -- one confirmation per channel
      raise_if_error(read_reply(stream))
    end
    M._subscriptions, counted = M._subscriptions + 1, true
    while true do
      local reply = raise_if_error(read_reply(stream))
      if type(reply) == "table" and reply[1] == "message" then
        synchro.emit(reply[2], reply[3])
      end
    end
  end)
  stream:close()
  if counted then M._subscriptions = M._subscriptions - 1 end
  M._cleanups = M._cleanups + 1
  if not ok then error(err, 0) end
end)

--- A transaction, for synchro.contextmanager: sends MULTI and emits the
--- connection; the commands of the body are queued by the server; then
--- EXEC if the body returned (its replies are in conn.replies), or
--- DISCARD if it raised, and the body's error goes on.
---@return redis_async.impl.Conn
Conn.transaction = synchro.generator(function(self)
  self:command("MULTI")
  local ok, err = pcall(synchro.emit, self)
  if ok then
    self.replies = self:command("EXEC")
  else
    self:command("DISCARD")
    error(err, 0)
  end
end)

-- Counters for tests: subscriptions open now, generator cleanups run.
M._subscriptions, M._cleanups = 0, 0

--- The number of subscribe generators open now and of their cleanups run.
---@return integer, integer
function M.stats() return M._subscriptions, M._cleanups end

--- Connects to a Redis server: a connection, or nil, msg, code.
--- `opts.tls`: true, or the options of synchro.aio.tls.connect (cafile=,
--- servername=, cert=, key=, ...), for a server's TLS port.
---@param host string? default "127.0.0.1"
---@param port integer? default 6379
---@param opts table? {tls = true|synchro.tls.Options}
---@return redis_async.impl.Conn? conn
---@return string? msg
---@return string? code
function M.connect(host, port, opts)
  host = host or "127.0.0.1"
  port = port or 6379
  if type(host) ~= "string" then
    error("bad argument #1 to 'connect' (string expected, got " ..
      type(host) .. ")", 0)
  end
  if type(port) ~= "number" then
    error("bad argument #2 to 'connect' (number expected, got " ..
      type(port) .. ")", 0)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #3 to 'connect' (table expected, got " ..
      type(opts) .. ")", 0)
  end
  for k in pairs(opts or {}) do
    if k ~= "tls" then
      error("bad argument #3 to 'connect' (unknown option '" ..
        tostring(k) .. "')", 0)
    end
  end
  local tls = opts and opts.tls
  if tls == true then tls = {} end
  if tls ~= nil and type(tls) ~= "table" then
    error("bad argument #3 to 'connect' (tls: true or table expected, " ..
      "got " .. type(tls) .. ")", 0)
  end
  local stream, msg, code = open_stream(host, port, tls)
  if not stream then return nil, msg, code end
  stream:nodelay(true)
  return setmetatable({ host = host, port = port, tls = tls, stream = stream,
    lock = aio.lock() }, Conn)
end

return M
