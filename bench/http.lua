-- HTTP client benchmark: 1,000 GETs of a small body and 50 GETs of 1 MiB
-- against one local server (nginx when installed, else python3's
-- threading http.server from spec/fixtures), 50 at a time, by synchro (blocking .futures from this
-- plain script, and .aio inside synchro.run) side by side with Python's
-- httpx and aiohttp async clients and `curl --parallel`. Prints
-- requests/s and ratios. Clients that are not installed are skipped.
local synchro = require "synchro"
local core = require "synchro.core"
local http = require "synchro.http"

local N_SMALL, N_BIG, WINDOW = 1000, 50, 50
local unpack = table.unpack or unpack

local function sh(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

local dir = os.tmpname()
os.remove(dir)
assert(sh("mkdir -p " .. dir))
local f = assert(io.open(dir .. "/small.txt", "wb"))
f:write(("x"):rep(100))
f:close()
f = assert(io.open(dir .. "/big.bin", "wb"))
f:write(("y"):rep(1048576))
f:close()
-- A port nothing listens on now (the kernel's pick, released).
local function free_port()
  local p = io.popen("python3 -c 'import socket; s = socket.socket(); " ..
    "s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'")
  local port = tonumber(p:read("*l") or "")
  p:close()
  return port or 30000 + math.floor(core.now() * 1000) % 20000
end

-- The server: nginx (one worker: the clients get the other core) when
-- installed, so that the clients are what is measured; else python3's
-- threading http.server, which is the bottleneck at about 1,000 req/s.
local port = free_port()
local server_name
local nginx = io.popen("command -v nginx || ls /usr/sbin/nginx 2>/dev/null")
local nginx_bin = nginx:read("*l")
nginx:close()
if nginx_bin then
  server_name = "nginx, 1 worker"
  f = assert(io.open(dir .. "/nginx.conf", "w"))
  f:write(([[
worker_processes 1;
pid %s/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path %s; proxy_temp_path %s; fastcgi_temp_path %s;
  uwsgi_temp_path %s; scgi_temp_path %s;
  server { listen 127.0.0.1:%d; root %s; }
}
]]):format(dir, dir, dir, dir, dir, dir, port, dir))
  f:close()
  sh(("(%s -p %s -c %s/nginx.conf -e %s/error.log -g 'daemon off;' " ..
    ">/dev/null 2>&1 & echo $! >%s/pid)"):format(nginx_bin, dir, dir, dir,
    dir))
else
  server_name = "python3 http.server (the bottleneck: install nginx-light)"
  local here = os.getenv("PWD") or "." -- run from the top of the tree
  sh(("cd %s && (python3 %s/spec/fixtures/http_server.py %d >/dev/null " ..
    "2>&1 & echo $! >%s/pid)"):format(dir, here, port, dir))
end
local base = ("http://127.0.0.1:%d/"):format(port)
for _ = 1, 100 do
  if sh("curl -s -o /dev/null " .. base .. "small.txt") then break end
  sh("sleep 0.05")
end

local function urls(path, n)
  local out = {}
  for i = 1, n do out[i] = base .. path end
  return out
end

-- synchro: blocking futures, WINDOW in flight
local function futures(list, size)
  local inflight, next_i, done = {}, 1, 0
  while done < #list do
    while next_i <= #list and #inflight < WINDOW do
      inflight[#inflight + 1] = http.get.future(list[next_i])
      next_i = next_i + 1
    end
    local r, msg = table.remove(inflight, 1):result()
    assert(r, msg)
    assert(r.status == 200 and #r.body == size)
    done = done + 1
  end
end

-- synchro: .aio in synchro.run, WINDOW tasks taking URLs from a list
local function aio_run(list, size)
  synchro.run(function()
    local i = 0
    local workers = {}
    for w = 1, WINDOW do
      workers[w] = function()
        while i < #list do
          i = i + 1
          local r = http.get.aio(list[i])
          assert(r.status == 200 and #r.body == size)
        end
      end
    end
    synchro.gather(unpack(workers))
  end)
end

-- synchro.aio.http inside the loop VM (no response crosses a thread):
-- the HTTP client alone
local in_loop = synchro.default():wrap(function(list, size, window)
  local ahttp = require "synchro.aio.http"
  local aio = require "synchro.aio"
  local i = 0
  local workers = {}
  for w = 1, window do
    workers[w] = function()
      while i < #list do
        i = i + 1
        local r = ahttp.get(list[i])
        assert(r.status == 200 and #r.body == size)
      end
    end
  end
  aio.gather(unpack(workers))
end)
local function loop_only(list, size) in_loop(list, size, WINDOW) end

local PY = [[
import asyncio, sys, time
lib, url = sys.argv[1], sys.argv[2]
n, size, window = map(int, sys.argv[3:6])
async def main():
    sem = asyncio.Semaphore(window)
    if lib == "httpx":
        import httpx
        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=window))
        async def get():
            async with sem:
                r = await client.get(url)
                assert r.status_code == 200 and len(r.content) == size
    else:
        import aiohttp
        client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=window))
        async def get():
            async with sem:
                async with client.get(url) as r:
                    body = await r.read()
                    assert r.status == 200 and len(body) == size
    t0 = time.monotonic()
    await asyncio.gather(*[get() for _ in range(n)])
    print(time.monotonic() - t0)
    await (client.aclose() if lib == "httpx" else client.close())
asyncio.run(main())
]]
-- Debian's python3-httpx and python3-aiohttp are for /usr/bin/python3
local PYTHON = sh("test -x /usr/bin/python3") and "/usr/bin/python3" or
  "python3"
local pyfile = dir .. "/client.py"
f = assert(io.open(pyfile, "w"))
f:write(PY)
f:close()

local function python(lib)
  return function(list, size)
    local p = io.popen(("%s %s %s %s %d %d %d 2>/dev/null"):format(PYTHON, pyfile,
      lib, list[1], #list, size, WINDOW))
    local secs = tonumber(p:read("*a"))
    p:close()
    return secs or false
  end
end

local function curl(list)
  local cfg = dir .. "/curl.cfg"
  local c = assert(io.open(cfg, "w"))
  for _, u in ipairs(list) do
    c:write(("url = %q\noutput = \"/dev/null\"\n"):format(u))
  end
  c:close()
  local t0 = core.now()
  if not sh(("curl -s --parallel --parallel-max %d -K %s 2>/dev/null")
    :format(WINDOW, cfg)) then return false end
  return core.now() - t0
end

local function timed(fn, list, size)
  local t0 = core.now()
  local secs = fn(list, size)
  if secs == false then return nil end
  return type(secs) == "number" and secs or core.now() - t0
end

local clients = {
  { "synchro .future (plain script)", futures },
  { "synchro .aio (synchro.run)", aio_run },
  { "synchro aio.http in the loop", loop_only },
  { "python httpx (asyncio)", python("httpx") },
  { "python aiohttp (asyncio)", python("aiohttp") },
  { "curl --parallel", curl },
}
local loads = {
  { ("%d GETs, 100 B"):format(N_SMALL), urls("small.txt", N_SMALL), 100 },
  { ("%d GETs, 1 MiB"):format(N_BIG), urls("big.bin", N_BIG), 1048576 },
}

-- Each client runs ROUNDS times, interleaved with the others, and its
-- best round counts: on a shared 2-core machine a round can lose its CPU
-- to anything else running.
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS") or "") or 3
futures(urls("small.txt", 100), 100) -- warm up: the loop, connections
print(("server: %s; best of %d rounds"):format(server_name, ROUNDS))
print(("%-32s %-16s %12s %9s %9s"):format("client", "load", "requests/s",
  "vs curl", "vs py"))
for _, load in ipairs(loads) do
  local best = {}
  for _ = 1, ROUNDS do
    for i, c in ipairs(clients) do
      local secs = timed(c[2], load[2], load[3])
      if secs then best[i] = math.max(best[i] or 0, #load[2] / secs) end
    end
  end
  local curl_rps = best[6]
  local py = math.max(best[4] or 0, best[5] or 0) -- the faster Python
  for i, c in ipairs(clients) do
    local rps = best[i]
    if rps then
      print(("%-32s %-16s %12.0f %8s %8s"):format(c[1], load[1], rps,
        curl_rps and ("%.2fx"):format(rps / curl_rps) or "-",
        py > 0 and ("%.2fx"):format(rps / py) or "-"))
    else
      print(("%-32s %-16s %12s"):format(c[1], load[1], "(not available)"))
    end
  end
end

sh("kill $(cat " .. dir .. "/pid) 2>/dev/null")
sh("rm -rf " .. dir)
synchro.default():close()
