-- A local HTTP server written with synchro.aio.tcp, running on its own
-- synchronizer, and 20 concurrent GETs to it from plain (blocking) code
-- through the async client of examples/http_get.lua.
--
--   tools/with-env.sh build/5.4 lua5.4 examples/http_demo.lua
--
-- Every response takes the server 0.1 s (an aio.sleep standing for work),
-- so 20 requests one after another would take 2 s; concurrently they take
-- about 0.1 s.
local dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "examples"
package.path = dir .. "/?.lua;" .. package.path

local synchro = require "synchro"
local http = require "http_get"

local server_S = synchro.new({ name = "http-server" })
local client_S = synchro.new({ name = "http-client" })

-- The server: GET /item/N answers with a Content-Length body, GET
-- /chunked/N with a chunked one; anything else is a 404.
local start_server = server_S:wrap(function(delay)
  local aio = require "synchro.aio"

  local function respond(conn, status, headers, body)
    local lines = { ("HTTP/1.1 %d %s"):format(status,
      status == 200 and "OK" or "Not Found") }
    for name, value in pairs(headers) do
      lines[#lines + 1] = name .. ": " .. value
    end
    lines[#lines + 1] = "\r\n"
    return conn:write(table.concat(lines, "\r\n") .. (body or ""))
  end

  local function handle(conn)
    while true do -- keep-alive: one request after another
      local request = conn:read_line()
      if not request or request == "" then return end
      local method, path = request:match("^(%u+) (%S+) HTTP/1%.%d$")
      local close = false
      while true do
        local line = conn:read_line()
        if not line then return end
        if line == "" then break end
        if line:lower():match("^connection:%s*close") then close = true end
      end
      aio.sleep(delay) -- the "work"
      local kind, n = (path or ""):match("^/(%a+)/(%d+)$")
      if method ~= "GET" or not kind then
        respond(conn, 404, { ["Content-Length"] = 10 }, "not found\n")
      elseif kind == "item" then
        local body = ("item %s\n"):format(n)
        respond(conn, 200, { ["Content-Type"] = "text/plain",
          ["Content-Length"] = #body }, body)
      else
        respond(conn, 200, { ["Content-Type"] = "text/plain",
          ["Transfer-Encoding"] = "chunked" })
        for i = 1, tonumber(n) do
          local chunk = ("chunk %d of %s\n"):format(i, n)
          conn:write(("%x\r\n%s\r\n"):format(#chunk, chunk))
        end
        conn:write("0\r\n\r\n")
      end
      if close then return end
    end
  end

  -- a listening server stays up (until closed, or its synchronizer is)
  local server = assert(aio.tcp.listen("127.0.0.1", 0, handle))
  return server:port()
end)

local port = start_server(0.1)
print(("server listening on 127.0.0.1:%d (synchronizer %q)")
  :format(port, "http-server"))

-- The client side: http.get wrapped for blocking use, timed on the loop.
local timed_get = client_S:wrap(function(url)
  local aio = require "synchro.aio"
  local t0 = aio.now()
  local status, headers, body = require("http_get").get(url)
  return status, headers, body, aio.now() - t0
end)

local urls = {}
for i = 1, 20 do
  urls[i] = ("http://127.0.0.1:%d/%s/%d"):format(port,
    i % 4 == 0 and "chunked" or "item", i)
end

local now = require("synchro.core").now
local t0 = now()
local futures = {}
for i, url in ipairs(urls) do futures[i] = timed_get.future(url) end
local total_bytes = 0
for i, fut in ipairs(futures) do
  local status, headers, body, secs = fut:result()
  total_bytes = total_bytes + #body
  print(("%-38s %d %-8s %4d bytes  %.3f s"):format(urls[i]:match("//(.*)"),
    status, headers["transfer-encoding"] and "chunked" or "length", #body,
    secs))
end
local total = now() - t0
print(("fetched %d URLs (%d bytes) concurrently in %.3f s")
  :format(#urls, total_bytes, total))

-- One blocking call, for contrast.
local get = http.wrap(client_S)
local status, _, body = get(("http://127.0.0.1:%d/item/42"):format(port))
print("blocking get:", status, (body:gsub("\n", "")))
local missing = get(("http://127.0.0.1:%d/nothing"):format(port))
print("missing page:", missing)

client_S:close()
server_S:close()
