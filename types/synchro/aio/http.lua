---@meta synchro.aio.http

---@class synchro.aio.http
---@field Response synchro.http.Response the class of responses
---@field curl_version fun(): string libcurl's version
local http = {}

local Stream = {}
local Client = {}

---@class synchro.http.Stream: synchro.http.Response
--- A streamed response: `body` is nil; read it with `read()`.

--- The next piece of the body, `nil` at its end, or `nil, msg, code` if
--- the transfer failed. Reading makes room: curl pauses the transfer
--- while 256 KiB wait unread (back pressure).
---@async
---@return string|nil chunk
---@return string? msg
---@return string? code
function Stream:read() end

--- Iterates over the body's pieces; raises if the transfer fails.
---@async
function Stream:chunks() end

--- Reads the rest of the body and returns it (or nil, msg, code).
---@async
function Stream:read_all() end

--- Ends the transfer (if still running) and frees it. Idempotent.
function Stream:close() end

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
function http.request(opts) end

--- GET url. `opts` as for request.
---@async
---@param url string
---@param opts? table
---@return synchro.http.Response|nil
---@return string? msg
---@return string? code
function http.get(url, opts) end

--- POST body (a string, a function or an aio.fs file) to url.
---@async
---@param url string
---@param body string|fun(): string?|userdata
---@param opts? table
---@return synchro.http.Response|nil
---@return string? msg
---@return string? code
function http.post(url, body, opts) end

---@class synchro.http.Client

--- A client: defaults for its requests (`headers`, `timeout`,
--- `connect_timeout`, `follow`, `verify`, `cafile`, `http_version`,
--- `decompress`) and `max_per_host`, a bound on its requests in flight to
--- one host:port (the others wait their turn). Connections are reused
--- (keep-alive; HTTP/2 streams share one connection when the server
--- offers it).
---@param opts? table
---@return synchro.http.Client
function http.client(opts) end

--- Client:request.
function Client:request(opts) end

--- Client:get.
function Client:get(url, opts) end

--- Client:post.
function Client:post(url, body, opts) end

--- The number of transfers curl holds now (for leak checks).
---@return integer
function http.transfers() end

return http
