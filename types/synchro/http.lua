---@meta synchro.http

--- synchro.aio.http ready for plain code: `S:wrap_module` of it on
--- `synchro.default()`. Every function blocks (or awaits inside async
--- code) and has `.aio` and `.future`; responses cross by value.
---@class synchro.http
---@field Response synchro.http.Response the class of responses
local http = {}

--- A request (see synchro.aio.http.request), blocking.
---@param opts table
---@return synchro.http.Response|nil
---@return string|nil message
---@return string|nil code
function http.request(opts) end

--- GET url, blocking.
---@param url string
---@param opts? table
---@return synchro.http.Response|nil
---@return string|nil message
---@return string|nil code
function http.get(url, opts) end

--- POST body to url, blocking.
---@param url string
---@param body string|function
---@param opts? table
---@return synchro.http.Response|nil
---@return string|nil message
---@return string|nil code
function http.post(url, body, opts) end

--- A client (a proxy whose methods block) that bounds requests per host.
---@param opts? table
---@return table
function http.client(opts) end

--- How many transfers run on the default Synchronizer's loop.
---@return integer
function http.transfers() end

--- libcurl's version.
---@return string
function http.curl_version() end

return http
