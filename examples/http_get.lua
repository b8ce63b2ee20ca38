-- A small async HTTP/1.1 client on synchro.aio.tcp.
--
-- As a module (put examples/ on package.path): require "http_get" gives
--   http.get(url [, opts])        async: call it inside a task
--   http.request(method, url [, opts])
--   http.wrap(S)                  a blocking get for plain code, S:wrap'ed
-- Each returns status, headers, body (header names in lower case;
-- repeated headers joined with ", "), or nil, msg, code. It handles
-- Content-Length, chunked and read-until-close bodies; opts.headers adds
-- request headers, opts.body sends a body, opts.timeout bounds the whole
-- request. One connection per request ("Connection: close").
--
-- As a script: lua examples/http_get.lua http://127.0.0.1:8000/
local http = {}

local function parse_url(url)
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if scheme == nil then return nil, "EINVAL: not an absolute URL" end
  if scheme:lower() ~= "http" then
    return nil, "EINVAL: only http:// URLs are supported"
  end
  local authority, path = rest:match("^([^/?#]*)(.*)$")
  path = path:gsub("#.*$", "")
  if path == "" or path:sub(1, 1) == "?" then path = "/" .. path end
  local host, port = authority:match("^%[([^%]]+)%]:?(%d*)$") -- IPv6
  if host == nil then host, port = authority:match("^([^:]+):?(%d*)$") end
  if host == nil then return nil, "EINVAL: no host in URL" end
  return {
    host = host, port = tonumber(port) or 80, path = path,
    authority = authority,
  }
end
http.parse_url = parse_url

-- Reads header lines up to the empty line into t (lower-case names).
local function read_headers(conn, t)
  for _ = 1, 200 do
    local line, msg, code = conn:read_line()
    if line == nil then
      return nil, msg or "EPROTO: connection closed in the headers",
        code or "EPROTO"
    end
    if line == "" then return t end
    local name, value = line:match("^([^:%s]+):%s*(.-)%s*$")
    if name == nil then
      return nil, "EPROTO: bad header line: " .. line, "EPROTO"
    end
    name = name:lower()
    t[name] = t[name] and t[name] .. ", " .. value or value
  end
  return nil, "EPROTO: too many headers", "EPROTO"
end

local function read_chunked(conn, headers)
  local parts = {}
  while true do
    local line, msg, code = conn:read_line()
    if line == nil then
      return nil, msg or "EPROTO: connection closed in a chunked body",
        code or "EPROTO"
    end
    local size = tonumber(line:match("^%s*(%x+)"), 16)
    if size == nil then
      return nil, "EPROTO: bad chunk size: " .. line, "EPROTO"
    end
    if size == 0 then break end
    local data
    data, msg, code = conn:read_exactly(size)
    if data == nil then return nil, msg, code end
    parts[#parts + 1] = data
    line, msg, code = conn:read_line()
    if line ~= "" then
      return nil, msg or "EPROTO: no CRLF after a chunk", code or "EPROTO"
    end
  end
  local ok, msg, code = read_headers(conn, headers) -- trailers
  if not ok then return nil, msg, code end
  return table.concat(parts)
end

local function read_to_end(conn)
  local parts = {}
  while true do
    local data, msg, code = conn:read()
    if data == nil then
      if code then return nil, msg, code end
      return table.concat(parts)
    end
    parts[#parts + 1] = data
  end
end

local function exchange(conn, method, u, opts)
  local lines = {
    ("%s %s HTTP/1.1"):format(method, u.path),
    "Host: " .. u.authority,
    "User-Agent: synchro-http_get",
    "Accept: */*",
    "Connection: close",
  }
  for name, value in pairs(opts.headers or {}) do
    lines[#lines + 1] = name .. ": " .. value
  end
  if opts.body then
    lines[#lines + 1] = "Content-Length: " .. #opts.body
  end
  lines[#lines + 1] = "\r\n"
  local ok, msg, code = conn:write(table.concat(lines, "\r\n") ..
    (opts.body or ""))
  if not ok then return nil, msg, code end

  local status_line
  status_line, msg, code = conn:read_line()
  if status_line == nil then
    return nil, msg or "EPROTO: connection closed before the status line",
      code or "EPROTO"
  end
  local status = tonumber(status_line:match("^HTTP/%d%.%d (%d%d%d)"))
  if status == nil then
    return nil, "EPROTO: bad status line: " .. status_line, "EPROTO"
  end
  local headers
  headers, msg, code = read_headers(conn, {})
  if headers == nil then return nil, msg, code end

  local body
  local length = headers["content-length"]
  if method == "HEAD" or status == 204 or status == 304 or
      (status >= 100 and status < 200) then
    body = ""
  elseif (headers["transfer-encoding"] or ""):lower():find("chunked") then
    body, msg, code = read_chunked(conn, headers)
  elseif length then
    local n = tonumber(length)
    if n == nil or n < 0 then
      return nil, "EPROTO: bad Content-Length: " .. length, "EPROTO"
    end
    body, msg, code = conn:read_exactly(n)
  else
    body, msg, code = read_to_end(conn)
  end
  if body == nil then return nil, msg, code end
  return status, headers, body
end

--- Sends one request and returns status, headers, body; or nil, msg, code.
--- Async: call it from a task.
function http.request(method, url, opts)
  local aio = require "synchro.aio"
  opts = opts or {}
  local u, err = parse_url(url)
  if u == nil then return nil, err, "EINVAL" end
  local function go()
    local conn, msg, code = aio.tcp.connect(u.host, u.port)
    if conn == nil then return nil, msg, code end
    -- closes the connection however this ends (error, cancellation)
    local ok, a, b, c = pcall(exchange, conn, method, u, opts)
    conn:close()
    if not ok then error(a, 0) end
    return a, b, c
  end
  if opts.timeout then return aio.timeout(opts.timeout, go) end
  return go()
end

--- GET url: status, headers, body; or nil, msg, code. Async.
function http.get(url, opts)
  return http.request("GET", url, opts)
end

--- A blocking get(url [, opts]) for plain code, running on S's loop.
function http.wrap(S)
  return S:wrap(function(url, opts)
    return require("http_get").get(url, opts)
  end, { name = "http_get" })
end

-- As a script: fetch the URL given on the command line.
if arg and arg[0] and arg[0]:match("http_get%.lua$") and
    not package.loaded.http_get then
  local dir = arg[0]:match("^(.*)/[^/]*$") or "."
  package.path = dir .. "/?.lua;" .. package.path
  package.loaded.http_get = http
  local synchro = require "synchro"
  local S = synchro.new({ name = "http_get" })
  local status, headers, body = http.wrap(S)(arg[1] or
    "http://127.0.0.1:8000/")
  if status == nil then
    io.stderr:write(tostring(headers), "\n")
    S:close()
    os.exit(1)
  end
  print(status)
  for name, value in pairs(headers) do print(name .. ": " .. value) end
  print()
  io.write(body)
  S:close()
end

return http
