--- The response of synchro.aio.http (and synchro.http): status, headers
--- (case-insensitive, repeats kept), body, `:json()`. A response is plain
--- data: it crosses between VMs by value (its `__synchro` marshaller), so
--- `synchro.http.get(url)` in a plain script returns the same object as
--- `aio.http.get(url)` in async code, and `r.body` costs no round trip.
local M = {}

local lower, tostring, type, setmetatable, rawget, rawset, pcall, next =
  string.lower, tostring, type, setmetatable, rawget, rawset, pcall, next

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
M.Response = Response

local find, sub, byte, match = string.find, string.sub, string.byte,
  string.match

-- Parses header lines (as curl hands them: the status line first) in one
-- pass of plain finds: a pattern with a lazy capture before a trailing
-- `%s*$` costs a match attempt per character of every value.
local function parse_head(head)
  local list, map = {}, setmetatable({}, Headers)
  local len = #head
  local nl = find(head, "\n", 1, true) or len + 1
  local reason = match(sub(head, 1, nl - 1), "^HTTP/%S+%s+%d+%s*(.-)%s*$")
  local pos = nl + 1
  while pos <= len do
    nl = find(head, "\n", pos, true) or len + 1
    local stop = nl - 1
    if byte(head, stop) == 13 then stop = stop - 1 end -- \r
    local colon = find(head, ":", pos, true)
    if colon and colon > pos and colon <= stop then
      local name = sub(head, pos, colon - 1)
      if find(name, "%s") then name = match(name, "^(%S+)%s*$") end
      if name then
        local value = sub(head, colon + 1, stop)
        local b1, bn = byte(value, 1), byte(value, -1)
        if b1 == 32 or b1 == 9 or bn == 32 or bn == 9 then
          value = match(value, "^%s*(.-)%s*$")
        end
        list[#list + 1] = { name, value }
        local k = lower(name)
        local old = rawget(map, k)
        map[k] = old and (old .. ", " .. value) or value
      end
    end
    pos = nl + 1
  end
  return list, map, reason or ""
end

-- headers, header_list and reason are parsed from the head on first use:
-- a response that only has its status and body read (and one that only
-- crosses to another VM) never parses it.
local function parse_into(self)
  local list, map, reason = parse_head(rawget(self, "_head") or "")
  rawset(self, "header_list", list)
  rawset(self, "headers", map)
  rawset(self, "reason", reason)
end
local LAZY = { headers = true, header_list = true, reason = true }

-- A large body comes from curl as bytes (src/core/marshal.h): it becomes
-- a string here only when read, and crosses to another VM without that.
local function body_of(self)
  local b = rawget(self, "_bytes")
  if b == nil then return nil end
  local s = b:take() -- frees curl's buffer now
  rawset(self, "body", s)
  rawset(self, "_bytes", nil)
  return s
end

--- The __index of a response (and of a streamed one, after its own
--- methods): Response's methods, then the fields made on first use.
function M.index(self, k)
  local v = Response[k]
  if v == nil then
    if k == "body" then return body_of(self) end
    if LAZY[k] and rawget(self, "_head") then
      parse_into(self)
      v = rawget(self, k)
    end
  end
  return v
end
Response.__index = M.index

-- pairs(r) shows every field, those made on first use too
function Response.__pairs(self)
  if rawget(self, "headers") == nil then parse_into(self) end
  body_of(self)
  return next, self, nil
end

--- Builds a response from what curl received (body: a string, bytes or
--- nil).
---@return synchro.http.Response
function M.new(status, head, body, url, version)
  local bytes
  if type(body) == "userdata" then body, bytes = nil, body end
  return setmetatable({
    status = status, ok = status >= 200 and status < 300, body = body,
    url = url, http_version = version, _head = head, _bytes = bytes,
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
    self.http_version, self._head,
    rawget(self, "body") or rawget(self, "_bytes") }
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
