---@meta synchro.aio.dns

---@class synchro.aio.dns
local dns = {}

---@class synchro.dns.Address
---@field addr string numeric address, "127.0.0.1" or "::1"
---@field port integer
---@field family "inet"|"inet6"
---@field socktype "stream"|"dgram"|"raw"

--- Resolves `host` (and a service name or port) into addresses, without
--- blocking the loop.
--- `opts.family`: "inet", "inet6" or "any" (default); `opts.socktype`:
--- "stream" (default), "dgram" or "any".
--- Returns a list of addresses, or nil, "EAI_NONAME: ...", "EAI_NONAME".
---@param host string|nil
---@param service string|integer|nil a service name ("http") or a port
---@param opts {family: string?, socktype: string?}|nil
---@return synchro.dns.Address[]|nil
---@return string|nil message
---@return string|nil code
function dns.getaddrinfo(host, service, opts) end

--- The host name and service name of a numeric address and port.
--- `opts.numeric`: give numeric forms, look nothing up.
---@param addr string
---@param port integer
---@param opts {numeric: boolean?}|nil
---@return string|nil host
---@return string service or error message
---@return string|nil code on error
function dns.getnameinfo(addr, port, opts) end

--- For tcp and udp: the addresses to try for host and port. A numeric
--- address needs no lookup.
---@param host string
---@param port integer
---@param socktype "stream"|"dgram"
---@return synchro.dns.Address[]|nil
---@return string|nil message
---@return string|nil code
function dns.resolve(host, port, socktype) end

--- Is s a numeric IPv4 or IPv6 address? "inet", "inet6" or nil.
---@param s string
---@return "inet"|"inet6"|nil
function dns.ip_family(s) end

return dns
