--- The response of synchro.aio.http (and synchro.http): status, headers
--- (case-insensitive, repeats kept), body, `:json()`. A response is plain
--- data: it crosses between VMs by value (its `__synchro` marshaller), so
--- `synchro.http.get(url)` in a plain script returns the same object as
--- `aio.http.get(url)` in async code, and `r.body` costs no round trip.
local M = {}

local lower, tostring, type, setmetatable, rawget, pcall =
  string.lower, tostring, type, setmetatable, rawget, pcall

---@class synchro.http.Headers
--- `headers["Content-Type"]`: the value, case-insensitive; repeated
--- headers give their values joined with ", " (use `response:header_all`
--- for each one).
local Headers = {
  __index = function(self, k)
    if type(k) == "string" then return rawget(self, lower(k)) end
  end,
}

---@class synchro.http.Response
---@field status integer the HTTP status code of the final response
---@field ok boolean status is 2xx
---@field headers synchro.http.Headers case-insensitive
---@field header_list {[1]: string, [2]: string}[] every header in order
---@field body string
---@field url string the URL that answered (after redirects)
---@field http_version string "1.0", "1.1", "2"
local Response = {}
Response.__index = Response
M.Response = Response

-- Parses header lines (as curl hands them: the status line first).
local function parse_head(head)
  local list, map, reason = {}, setmetatable({}, Headers), nil
  for line in head:gmatch("([^\r\n]*)\r?\n") do
    if reason == nil then
      reason = line:match("^HTTP/%S+%s+%d+%s*(.*)$") or ""
    else
      local name, value = line:match("^([^:%s]+)%s*:%s*(.-)%s*$")
      if name then
        list[#list + 1] = { name, value }
        local k = lower(name)
        local old = rawget(map, k)
        map[k] = old and (old .. ", " .. value) or value
      end
    end
  end
  return list, map, reason or ""
end

--- Builds a response from what curl received.
---@return synchro.http.Response
function M.new(status, head, body, url, version)
  local list, map, reason = parse_head(head)
  return setmetatable({
    status = status, ok = status >= 200 and status < 300, reason = reason,
    headers = map, header_list = list, body = body, url = url,
    http_version = version, _head = head,
  }, Response)
end

--- The value of header `name` (case-insensitive; repeats joined with
--- ", "), or nil.
---@param name string
---@return string|nil
function Response:header(name)
  return self.headers[name]
end

--- Every value of header `name`, in order (an empty list if absent).
---@param name string
---@return string[]
function Response:header_all(name)
  local k, out = lower(name), {}
  for _, h in ipairs(self.header_list) do
    if lower(h[1]) == k then out[#out + 1] = h[2] end
  end
  return out
end

local cjson
--- The body decoded as JSON with lua-cjson: JSON `null` is `cjson.null`
--- (a light userdata: compare with it, do not send it to another VM),
--- and `[]` is an empty table, like `{}`. Invalid JSON returns
--- `nil, "EBADJSON: ...", "EBADJSON"`.
---@return any|nil value
---@return string? msg
---@return string? code
function Response:json()
  if cjson == nil then
    local ok, m = pcall(require, "cjson")
    if not ok then
      error("resp:json() needs lua-cjson (Debian: lua-cjson; luarocks: " ..
        "lua-cjson)", 2)
    end
    cjson = m
  end
  local ok, v = pcall(cjson.decode, self.body)
  if not ok then
    return nil, "EBADJSON: " .. tostring(v):gsub("^.-:%d+: ", ""),
      "EBADJSON"
  end
  return v
end

function Response:__tostring()
  return ("synchro.http.Response(%d %s, %d bytes)"):format(self.status,
    self.url, #self.body)
end

-- Crossing: a table of its five parts (status, url, version, head,
-- body), so that the body is copied once into the call's buffer and once
-- out of it, never joined with the rest into one string.
function Response.__synchro(self)
  return "synchro.http.response", { self.status, self.url,
    self.http_version, self._head, self.body }
end

require("synchro.kinds").own(Response.__synchro)

--- Rebuilds a response from its __synchro payload.
function M.decode(p)
  if type(p) ~= "table" or type(p[1]) ~= "number" or type(p[4]) ~= "string"
    or type(p[5]) ~= "string" then
    error("malformed synchro.http.response payload", 0)
  end
  return M.new(p[1], p[4], p[5], p[2], p[3])
end

return M
