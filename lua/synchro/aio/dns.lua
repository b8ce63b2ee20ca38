--- synchro.aio.dns: name resolution for async code on a synchronizer's
--- loop. Lookups run on libuv's thread pool; the task waits without
--- blocking the loop. Cancelling the task cancels the lookup.
local core = require "synchro.core"

local dns = {}

---@class synchro.dns.Address
---@field addr string numeric address, "127.0.0.1" or "::1"
---@field port integer
---@field family "inet"|"inet6"
---@field socktype "stream"|"dgram"|"raw"

local check = require "synchro.check"
local argerror, check_opts =
  check.argerror, check.opts


local FAMILIES = { inet = true, inet6 = true, any = true }
local SOCKTYPES = { stream = true, dgram = true, any = true }

local await = require("synchro.aio.request").await

-- Starters for request.await (not tail calls, so that argument errors
-- name the C function).
local function start_getaddrinfo(cb, host, service, family, socktype)
  local r, m, c = core.getaddrinfo(host, service, family, socktype, cb)
  return r, m, c
end

local function start_getnameinfo(cb, addr, port, numeric)
  local r, m, c = core.getnameinfo(addr, port, numeric, cb)
  return r, m, c
end

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
function dns.getaddrinfo(host, service, opts)
  if host ~= nil and type(host) ~= "string" then
    argerror(1, "getaddrinfo", "string expected, got " .. type(host))
  end
  local st = type(service)
  if service ~= nil and st ~= "string" and st ~= "number" then
    argerror(2, "getaddrinfo", "string or number expected, got " .. st)
  end
  if host == nil and service == nil then
    argerror(1, "getaddrinfo", "host or service expected")
  end
  opts = check_opts(opts, 3, "getaddrinfo", { "family", "socktype" })
  local family, socktype = opts.family or "any", opts.socktype or "stream"
  if not FAMILIES[family] then
    argerror(3, "getaddrinfo", "bad family '" .. tostring(family) .. "'")
  end
  if not SOCKTYPES[socktype] then
    argerror(3, "getaddrinfo", "bad socktype '" .. tostring(socktype) .. "'")
  end
  if st == "number" then service = ("%d"):format(service) end
  local list, msg, code = await("aio.dns.getaddrinfo", start_getaddrinfo,
    nil, nil, host, service, family, socktype)
  if not list then return nil, msg, code end
  -- the same address can come once per protocol: keep the first
  local seen, out = {}, {}
  for i = 1, #list do
    local a = list[i]
    local key = a.family .. " " .. a.addr .. " " .. a.port .. " " ..
      a.socktype
    if not seen[key] then
      seen[key] = true
      out[#out + 1] = a
    end
  end
  return out
end

--- The host name and service name of a numeric address and port.
--- `opts.numeric`: give numeric forms, look nothing up.
---@param addr string
---@param port integer
---@param opts {numeric: boolean?}|nil
---@return string|nil host
---@return string service or error message
---@return string|nil code on error
function dns.getnameinfo(addr, port, opts)
  if type(addr) ~= "string" then
    argerror(1, "getnameinfo", "string expected, got " .. type(addr))
  end
  if core.ip_family(addr) == nil then
    argerror(1, "getnameinfo", "numeric IPv4 or IPv6 address expected")
  end
  if type(port) ~= "number" then
    argerror(2, "getnameinfo", "number expected, got " .. type(port))
  end
  opts = check_opts(opts, 3, "getnameinfo", { "numeric" })
  return await("aio.dns.getnameinfo", start_getnameinfo, nil, nil, addr,
    port, opts.numeric and true or false)
end

--- For tcp and udp: the addresses to try for host and port. A numeric
--- address needs no lookup.
---@param host string
---@param port integer
---@param socktype "stream"|"dgram"
---@return synchro.dns.Address[]|nil
---@return string|nil message
---@return string|nil code
function dns.resolve(host, port, socktype)
  local family = core.ip_family(host)
  if family then
    return { { addr = host, port = port, family = family,
      socktype = socktype } }
  end
  local list, msg, code = dns.getaddrinfo(host, port, { socktype = socktype })
  if list and #list == 0 then
    return nil, "EAI_NONAME: unknown node or service", "EAI_NONAME"
  end
  return list, msg, code
end

--- Is s a numeric IPv4 or IPv6 address? "inet", "inet6" or nil.
---@param s string
---@return "inet"|"inet6"|nil
function dns.ip_family(s) return core.ip_family(s) end

return dns
