--- synchro.http: the HTTP client of synchro.aio.http, ready for plain
--- (blocking) code: every function is wrapped on the default
--- Synchronizer, with `.future` and `.aio` for concurrency.
---
---     local http = require "synchro.http"
---     local r = http.get("http://127.0.0.1:8080/")   -- blocks
---     local f = http.get.future(url)                 -- f:result()
---
--- Responses cross by value (status, headers, body, :json() work here);
--- a client (`http.client{...}`) and a streamed response cross as
--- proxies whose methods block.
local synchro = require "synchro"
return synchro.default():wrap_module("synchro.aio.http")
