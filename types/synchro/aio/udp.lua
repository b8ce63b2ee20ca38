---@meta synchro.aio.udp

---@class synchro.aio.udp
---@field Socket synchro.udp.Socket the class of sockets
local udp = {}

---@class synchro.udp.Socket
local Socket = {}

--- Opens a UDP socket bound to `host` (a name or a numeric address) and
--- `port` (0: a free port; see sock:sockname()). `opts.reuseaddr` sets
--- SO_REUSEADDR. Returns the socket, or nil, msg, code.
---@param host string
---@param port integer
---@param opts {reuseaddr: boolean?}|nil
---@return synchro.udp.Socket|nil
---@return string|nil message
---@return string|nil code
function udp.bind(host, port, opts) end

--- Sends one datagram to `host` and `port`; returns once it is sent:
--- true, or nil, msg, code.
---@param data string
---@param host string
---@param port integer
---@return true|nil
---@return string|nil message
---@return string|nil code
function Socket:send(data, host, port) end

--- Waits for the next datagram: returns data, addr, port; or nil, msg,
--- code on an error (ECANCELED if the socket is closed meanwhile).
---@return string|nil data
---@return string|nil addr, or the error message
---@return integer|string|nil port, or the error code
function Socket:recv() end

--- The local address and port.
---@return string|nil addr
---@return integer|string port, or the error message
function Socket:sockname() end

--- Closes the socket at once; a task waiting in recv() gets nil,
--- "ECANCELED: ...", "ECANCELED". Idempotent.
function Socket:close() end

return udp
