--- synchro.aio.http: an HTTP(S) client for async code on a synchronizer's
--- loop, on libcurl's multi-socket interface (src/aio/http.c): one curl
--- multi handle per loop, so every request of the loop shares curl's
--- connection cache (keep-alive, HTTP/2 multiplexing).
---
---     local http = require "synchro.aio.http"
---     local r = assert(http.get("http://127.0.0.1:8080/"))
---     print(r.status, r.headers["content-type"], #r.body)
---
--- I/O failures return `nil, msg, code` (`ECONNREFUSED`, `ETIMEDOUT`,
--- else curl's `CURLE_*` name); misuse raises. Cancellation removes the
--- transfer from curl at once.
local core = require "synchro.core"
local check = require "synchro.check"
check.built_with(core.http_request, "synchro.aio.http", "libcurl",
  "libcurl4-openssl-dev")
local sched = require "synchro.sched"
local response = require "synchro.http_response"

local ypcall = sched.yieldable_pcalls()
local argerror = check.argerror
local type, tostring, setmetatable, error, pairs, ipairs, math_ceil =
  type, tostring, setmetatable, error, pairs, ipairs, math.ceil

local http = {}

local EV_HEADERS, EV_DATA, EV_DONE, EV_NEED = 1, 2, 4, 8
local function has(ev, bit) return ev % (bit * 2) >= bit end

local OPTIONS = { "method", "url", "headers", "body", "json", "timeout",
  "connect_timeout", "follow", "verify", "cafile", "http_version",
  "stream", "decompress" }
local CLIENT_OPTIONS = { "headers", "timeout", "connect_timeout", "follow",
  "verify", "cafile", "http_version", "decompress", "max_per_host" }
local VERSIONS = { ["1.0"] = true, ["1.1"] = true, ["2"] = true,
  ["2-prior-knowledge"] = true }

local function is_file(v)
  local mt = type(v) == "userdata" and getmetatable(v)
  return mt and mt.__index == core.fs_file_methods or false
end

local function ms(v, n, name, what)
  if v == nil then return 0 end
  local t = check.time(v, n, name, what)
  if t == nil then return 0 end -- no limit
  return math.max(math_ceil(t * 1000), 1)
end

local function header_lines(headers, n, name, out)
  if headers == nil then return out end
  if type(headers) ~= "table" then
    argerror(n, name, "headers: table expected, got " .. type(headers), 4)
  end
  for k, v in pairs(headers) do
    if type(k) ~= "string" or not k:match("^[%w!#$%%&'*+%-.^_`|~]+$") then
      argerror(n, name, "headers: bad header name " .. tostring(k), 4)
    end
    local values = type(v) == "table" and v or { v }
    for _, x in ipairs(values) do
      if type(x) == "number" then x = tostring(x) end
      if type(x) ~= "string" or x:find("[\r\n]") then
        argerror(n, name, ("headers: bad value for '%s'"):format(k), 4)
      end
      -- curl drops "Name:"; "Name;" sends an empty value
      out[#out + 1] = x == "" and (k .. ";") or (k .. ": " .. x)
    end
  end
  return out
end

-- URLs that curl parsed well lately (a request to the same URL as one
-- before it skips the parse; curl parses it again to send it anyway).
local urls_ok, nurls_ok = {}, 0

local NONE = {} -- no defaults (never written)
-- methods taken as they are, without the pattern check and upper()
local METHODS = { GET = true, POST = true, PUT = true, HEAD = true,
  DELETE = true, PATCH = true, OPTIONS = true }

-- Checks opts (over the client's defaults) and gives what C reads, in
-- one table made at once.
local function normalize(opts, n, name, defaults)
  check.opts(opts, n, name, OPTIONS)
  defaults = defaults or NONE
  local url = opts.url
  if type(url) ~= "string" then
    argerror(n, name, "url: string expected, got " .. type(url), 3)
  end
  if not urls_ok[url] then
    local ok, why = core.http_check_url(url)
    if not ok then
      argerror(n, name, ("url: malformed URL '%s' (%s)"):format(url, why), 3)
    end
    if nurls_ok >= 256 then urls_ok, nurls_ok = {}, 0 end
    urls_ok[url], nurls_ok = true, nurls_ok + 1
  end
  local lines = header_lines(defaults.headers, n, name, {})
  header_lines(opts.headers, n, name, lines)
  local body, src, body_source, body_size = opts.body, nil, nil, nil
  if opts.json ~= nil then
    if body ~= nil then argerror(n, name, "body and json both given", 3) end
    body = require("cjson").encode(opts.json)
    lines[#lines + 1] = "Content-Type: application/json"
  end
  local body_string
  if type(body) == "string" then
    body_string = body
  elseif type(body) == "function" then
    src, body_source = body, true
  elseif is_file(body) then
    local fs = require "synchro.aio.fs"
    local st = fs.fstat(body)
    body_size = st and st.size or -1
    body_source = true
    src = function()
      local data, msg = fs.read(body, 65536)
      if data == nil then error(msg, 0) end
      return data ~= "" and data or nil
    end
  elseif body ~= nil then
    argerror(n, name, "body: string, function or aio.fs file expected, got "
      .. type(body), 3)
  end
  local method = opts.method or (body ~= nil and "POST" or "GET")
  if not METHODS[method] then
    if type(method) ~= "string" or not method:match("^%a+$") then
      argerror(n, name, "method: bad method " .. tostring(method), 3)
    end
    method = method:upper()
  end
  if method == "POST" and body == nil then body_string = "" end
  local function get(k)
    local v = opts[k]
    if v == nil then v = defaults[k] end
    return v
  end
  local timeout_ms = ms(get("timeout"), n, name, "timeout")
  local connect_timeout_ms = ms(get("connect_timeout"), n, name,
    "connect_timeout")
  local follow = get("follow")
  if follow == nil or follow == true then follow = 10 end
  if follow == false then follow = 0 end
  if type(follow) ~= "number" or follow < 0 or follow % 1 ~= 0 then
    argerror(n, name, "follow: boolean or count expected", 3)
  end
  local verify = get("verify")
  if verify ~= nil and type(verify) ~= "boolean" then
    argerror(n, name, "verify: boolean expected, got " .. type(verify), 3)
  end
  local cafile = get("cafile")
  if cafile ~= nil and type(cafile) ~= "string" then
    argerror(n, name, "cafile: string expected, got " .. type(cafile), 3)
  end
  local version = get("http_version")
  if version ~= nil and not VERSIONS[version] then
    argerror(n, name, "http_version: \"1.0\", \"1.1\", \"2\" or " ..
      "\"2-prior-knowledge\" expected", 3)
  end
  return {
    url = url, header_lines = lines, method = method, body = body_string,
    body_source = body_source, body_size = body_size,
    timeout_ms = timeout_ms, connect_timeout_ms = connect_timeout_ms,
    follow = follow, verify = verify ~= false, cafile = cafile,
    http_version = version,
    pipewait = version ~= "1.0" and version ~= "1.1" and
      url:match("^[Hh][Tt][Tt][Pp][Ss]:") ~= nil,
    decompress = get("decompress") ~= false,
    stream = opts.stream and true or false,
  }, src
end

-- A request's state, shared with curl's event function (which must not
-- hold the transfer: a stream nobody reads any more is collected).
local WEAK_VALUES = { __mode = "v" }
local function new_state()
  return { done = false, headers = false, data = false, task = false,
    token = 0, ref = setmetatable({}, WEAK_VALUES) }
end

local function wake(st)
  local task = st.task
  if task then
    st.task = false
    task.sched:wake(task, st.token)
  end
end

local function on_event(st, ev)
  if has(ev, EV_DONE) then st.done = true end
  if has(ev, EV_HEADERS) then st.headers = true end
  if has(ev, EV_DATA) then st.data = true end
  if has(ev, EV_NEED) and st.feed then st.feed() end
  wake(st)
end

-- Waits until st[what] or st.done; a cancellation closes the transfer at
-- once.
local function wait(st, t, what, name)
  while not (st[what] or st.done) do
    local task, token = sched.prepare(name)
    st.task, st.token = task, token
    local ok, err = ypcall(sched.suspend, task)
    st.task = false
    if not ok then
      t:close()
      if st.feeder then st.feeder:cancel() end
      error(err, 0)
    end
    if st.src_err ~= nil then
      t:close()
      error(st.src_err, 0)
    end
  end
end

-- Feeds the request body from src, one chunk each time curl asks.
local function feeder(st, src, s)
  st.feed = function()
    if st.feeding or st.fed_all then return end
    st.feeding = true
    st.feeder = s:spawn(function()
      local ok, chunk = ypcall(src)
      st.feeding, st.feeder = false, nil
      local t = st.ref.t
      if t == nil then return end
      if ok and chunk ~= nil and type(chunk) ~= "string" then
        ok, chunk = false, "body source returned a " .. type(chunk) ..
          " (string or nil expected)"
      end
      if not ok then
        st.src_err = chunk
        wake(st)
      elseif chunk == nil or chunk == "" then
        st.fed_all = true
        t:feed(nil)
      else
        t:feed(chunk)
      end
    end)
  end
end

---@class synchro.http.Stream: synchro.http.Response
--- A streamed response: `body` is nil; read it with `read()`.
local Stream = {}
local response_index = response.index
Stream.__index = function(self, k)
  local v = Stream[k]
  if v ~= nil then return v end
  return response_index(self, k)
end
Stream.__pairs = response.Response.__pairs

--- The next piece of the body, `nil` at its end, or `nil, msg, code` if
--- the transfer failed. Reading makes room: curl pauses the transfer
--- while 256 KiB wait unread (back pressure).
---@async
---@return string|nil chunk
---@return string? msg
---@return string? code
function Stream:read()
  local t, st = self._t, self._st
  if t == nil then return nil end
  while true do
    local chunk = t:take()
    if chunk ~= "" then return chunk end
    if st.done then
      local ok, msg, code = t:result()
      self:close()
      if not ok then return nil, msg, code end
      return nil
    end
    st.data = false
    wait(st, t, "data", "read")
  end
end

--- Iterates over the body's pieces; raises if the transfer fails.
---@async
function Stream:chunks()
  return function()
    local chunk, msg = self:read()
    if chunk == nil and msg ~= nil then error(msg, 2) end
    return chunk
  end
end

--- Reads the rest of the body and returns it (or nil, msg, code).
---@async
function Stream:read_all()
  local parts = {}
  while true do
    local chunk, msg, code = self:read()
    if chunk == nil then
      if msg then return nil, msg, code end
      return table.concat(parts)
    end
    parts[#parts + 1] = chunk
  end
end

--- Ends the transfer (if still running) and frees it. Idempotent.
function Stream:close()
  local t = self._t
  if t then
    self._t = nil
    t:close()
    if self._release then self._release() end
  end
end
Stream.__close = Stream.close
Stream.__gc = Stream.close

local function perform(name, opts, n, defaults, release)
  local o, src = normalize(opts, n, name, defaults)
  local task = sched.task(name)
  local st = new_state()
  local t = core.http_request(o, function(ev) return on_event(st, ev) end)
  st.ref.t = t
  if src then feeder(st, src, task.sched) end
  if o.stream then
    wait(st, t, "headers", name)
  else
    wait(st, t, "done", name)
  end
  -- a stream whose headers came has a response even if its body then
  -- failed (read() reports that), however fast the failure came
  local ok, msg, code = true, nil, nil
  if st.done and not (o.stream and st.headers) then
    ok, msg, code = t:result()
  end
  if not ok then
    t:close()
    return nil, msg, code
  end
  local status, url, version = t:info()
  if o.stream then
    local r = response.new(status, t:head(), nil, url, version)
    r._t, r._st, r._release = t, st, release
    return setmetatable(r, Stream)
  end
  local r = response.new(status, t:head(), t:take_body(), url, version)
  t:close()
  return r
end

--- Sends a request and waits for its response. `opts`: `url` (http or
--- https), `method` (default GET, or POST with a body), `headers` (name
--- -> value or list of values), `body` (a string; a function that returns
--- the next chunk, nil at the end, and may await; or an aio.fs file),
--- `json` (a value sent as JSON), `timeout` and `connect_timeout`
--- (seconds), `follow` (redirects: true = 10, false, or a count),
--- `verify` (TLS, default true), `cafile`, `http_version` ("1.0",
--- "1.1", "2", "2-prior-knowledge"), `decompress` (default true: gzip,
--- deflate, br), `stream` (return at the headers; read the body with
--- `resp:read()`).
---@async
---@param opts table
---@return synchro.http.Response|nil
---@return string? msg
---@return string? code
function http.request(opts)
  if type(opts) ~= "table" then
    argerror(1, "request", "table expected, got " .. type(opts))
  end
  return perform("request", opts, 1)
end

local function with_url(url, opts, n, name, method)
  if opts == nil then return { url = url, method = method } end
  if type(opts) ~= "table" then
    argerror(n, name, "table expected, got " .. type(opts), 3)
  end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.url = url
  if o.method == nil then o.method = method end
  return o
end

--- GET url. `opts` as for request.
---@async
---@param url string
---@param opts? table
---@return synchro.http.Response|nil
---@return string? msg
---@return string? code
function http.get(url, opts)
  return perform("get", with_url(url, opts, 2, "get", "GET"), 1)
end

--- POST body (a string, a function or an aio.fs file) to url.
---@async
---@param url string
---@param body string|fun(): string?|userdata
---@param opts? table
---@return synchro.http.Response|nil
---@return string? msg
---@return string? code
function http.post(url, body, opts)
  local o = with_url(url, opts, 3, "post", "POST")
  if body == nil then body = "" end
  o.body = body
  return perform("post", o, 2)
end

---@class synchro.http.Client
local Client = {}
Client.__index = Client

--- A client: defaults for its requests (`headers`, `timeout`,
--- `connect_timeout`, `follow`, `verify`, `cafile`, `http_version`,
--- `decompress`) and `max_per_host`, a bound on its requests in flight to
--- one host:port (the others wait their turn). Connections are reused
--- (keep-alive; HTTP/2 streams share one connection when the server
--- offers it).
---@param opts? table
---@return synchro.http.Client
function http.client(opts)
  opts = check.opts(opts, 1, "client", CLIENT_OPTIONS)
  local max = opts.max_per_host
  if max ~= nil and (type(max) ~= "number" or max < 1 or max % 1 ~= 0) then
    argerror(1, "client", "max_per_host: positive integer expected")
  end
  local defaults = {}
  for k, v in pairs(opts) do defaults[k] = v end
  defaults.max_per_host = nil
  return setmetatable({ defaults = defaults, max = max, hosts = {} },
    Client)
end

function Client:request(opts)
  if type(opts) ~= "table" then
    argerror(1, "request", "table expected, got " .. type(opts))
  end
  if not self.max then return perform("request", opts, 1, self.defaults) end
  local host = type(opts.url) == "string" and
    (opts.url:match("^%a+://([^/?#]+)") or opts.url) or ""
  local sem = self.hosts[host]
  if sem == nil then
    sem = require("synchro.aio.sync").semaphore(self.max)
    self.hosts[host] = sem
  end
  sem:acquire()
  local released = false
  local function release()
    if not released then
      released = true
      sem:release()
    end
  end
  local ok, r, msg, code = ypcall(perform, "request", opts, 1,
    self.defaults, release)
  if not (ok and r and r._t) then release() end -- a stream releases later
  if not ok then error(r, 0) end
  return r, msg, code
end

function Client:get(url, opts)
  return self:request(with_url(url, opts, 2, "get", "GET"))
end

function Client:post(url, body, opts)
  local o = with_url(url, opts, 3, "post", "POST")
  o.body = body == nil and "" or body
  return self:request(o)
end

--- The number of transfers curl holds now (for leak checks).
---@return integer
function http.transfers()
  return core.http_transfers()
end

--- libcurl's version text.
http.curl_version = core.http_curl_version

http.Response = response.Response
return http
