-- TCP echo over loopback: synchro.aio.tcp next to the same echo written
-- with luv, in the same run; TLS echo and handshakes next to Python's
-- asyncio with ssl; and 100k concurrent sleeping tasks.
--
-- synchro: server and client are both async code on one synchronizer's
-- loop (one wrapped call runs the whole measurement), so the figures are
-- those of the loop side: the buffered stream, the scheduler, the C
-- binding. luv: one luv loop on the main thread, run to completion.
-- Both echo servers write back what they read; the synchro one waits for
-- each write to complete (back pressure), the luv one queues it.
--
-- Run: tools/with-env.sh build/5.4 lua5.4 bench/tcp_echo.lua
-- SYNCHRO_BENCH_SCALE=0.3 shortens every phase. Takes about 25 s.
local synchro = require "synchro"

local SCALE = tonumber(os.getenv("SYNCHRO_BENCH_SCALE") or "1") or 1
local THROUGHPUT_SECS = 1.5 * SCALE
local RATE_SECS = 1 * SCALE
local ROUNDS = 2
local CHUNK = 64 * 1024
local MESSAGE = 64
local TASKS = 100000

local S = synchro.new({ name = "bench-tcp" })

-- Echo throughput: one connection; a writer task sends CHUNK-byte writes
-- for `secs`, a reader task counts what comes back.
local synchro_throughput = S:wrap(function(secs, chunk_size)
  local aio = require "synchro.aio"
  local server = assert(aio.tcp.listen("127.0.0.1", 0, function(s)
    while true do
      local data = s:read()
      if not data or not s:write(data) then break end
    end
  end))
  local c = assert(aio.tcp.connect("127.0.0.1", server:port()))
  local chunk = string.rep("x", chunk_size)
  local received = 0
  local t0 = aio.now()
  local reader = aio.spawn(function()
    while true do
      local data = c:read()
      if not data then break end
      received = received + #data
    end
  end)
  local sent = 0
  while aio.now() - t0 < secs do
    assert(c:write(chunk))
    sent = sent + chunk_size
  end
  c:shutdown()
  reader:join()
  local elapsed = aio.now() - t0
  c:close()
  server:close()
  assert(received == sent, "echo lost data")
  return received, elapsed
end)

-- Request rate: write a message, read its echo, repeat.
local synchro_rate = S:wrap(function(secs, size)
  local aio = require "synchro.aio"
  local server = assert(aio.tcp.listen("127.0.0.1", 0, function(s)
    s:nodelay(true)
    while true do
      local data = s:read()
      if not data or not s:write(data) then break end
    end
  end))
  local c = assert(aio.tcp.connect("127.0.0.1", server:port()))
  c:nodelay(true)
  local msg = string.rep("x", size)
  local n = 0
  local t0 = aio.now()
  while aio.now() - t0 < secs do
    for _ = 1, 100 do
      c:write(msg)
      assert(c:read_exactly(size))
    end
    n = n + 100
  end
  local elapsed = aio.now() - t0
  c:close()
  server:close()
  return n, elapsed
end)

-- TLS: the same echo throughput over synchro.aio.tls, and handshakes per
-- second (connect, handshake, one byte echoed, close), one at a time.
-- Its peer is the same pair written with Python's asyncio and ssl
-- (bench/tls_echo.py), run in the same session. Both ends use the
-- system's OpenSSL with one self-signed P-256 certificate.
local synchro_tls = S:wrap(function(dir, secs, chunk_size, hs_secs)
  local aio = require "synchro.aio"
  local ok, tls = pcall(require, "synchro.aio.tls")
  if not ok then return nil end
  local opts = { cert = dir .. "/cert.pem", key = dir .. "/key.pem" }
  local server = assert(tls.listen("127.0.0.1", 0, opts, function(s)
    while true do
      local data = s:read()
      if not data or not s:write(data) then break end
    end
  end))
  local copts = { cafile = dir .. "/cert.pem" }
  local c = assert(tls.connect("localhost", server:port(), copts))
  local chunk = string.rep("x", chunk_size)
  local received = 0
  local t0 = aio.now()
  local reader = aio.spawn(function()
    while true do
      local data = c:read()
      if not data then break end
      received = received + #data
    end
  end)
  local sent = 0
  while aio.now() - t0 < secs do
    assert(c:write(chunk))
    sent = sent + chunk_size
  end
  c:shutdown()
  reader:join()
  local elapsed = aio.now() - t0
  c:close()
  assert(received == sent, "TLS echo lost data")
  local n = 0
  local h0 = aio.now()
  while aio.now() - h0 < hs_secs do
    local hc = assert(tls.connect("localhost", server:port(), copts))
    assert(hc:write("x"))
    assert(hc:read_exactly(1))
    hc:close()
    n = n + 1
  end
  local hs_elapsed = aio.now() - h0
  server:close()
  return received / elapsed / 1e6, n / hs_elapsed
end)

-- The Python peer: MB/s and handshakes/s, or nil.
local function python_tls(dir, secs, chunk_size, hs_secs)
  local p = io.popen(("python3 bench/tls_echo.py %s %g %d %g 2>/dev/null")
    :format(dir, secs, chunk_size, hs_secs))
  local out = p:read("*a")
  p:close()
  local bytes, tsecs = out:match("throughput (%d+) ([%d.]+)")
  local n, hsecs = out:match("handshakes (%d+) ([%d.]+)")
  if not bytes or not n then return nil end
  return tonumber(bytes) / tonumber(tsecs) / 1e6, tonumber(n) / tonumber(hsecs)
end

local function make_cert()
  local dir = os.tmpname()
  os.remove(dir)
  local r = os.execute(("mkdir %s && cd %s && openssl req -x509 -newkey ec " ..
    "-pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj " ..
    "/CN=localhost -addext subjectAltName=DNS:localhost -keyout key.pem " ..
    "-out cert.pem >/dev/null 2>&1"):format(dir, dir))
  if r == true or r == 0 then return dir end
  return nil
end

-- 100k tasks that each sleep 10 ms: time from the first spawn to the last
-- finish, and the loop VM's Lua memory while all of them sleep.
local sleeping_tasks = S:wrap(function(n)
  local aio = require "synchro.aio"
  collectgarbage()
  collectgarbage()
  local before = collectgarbage("count")
  local t0 = aio.now()
  local tasks = {}
  for i = 1, n do tasks[i] = aio.spawn(aio.sleep, 0.01) end
  coroutine.yield() -- let them all start and reach their sleep
  local during = collectgarbage("count")
  for i = 1, n do tasks[i]:join() end
  local elapsed = aio.now() - t0
  return elapsed, (during - before) * 1024 / n
end)

-- The same echo with luv ----------------------------------------------------

local ok_luv, uv = pcall(require, "luv")

local function luv_server(on_port)
  local server = uv.new_tcp()
  assert(server:bind("127.0.0.1", 0))
  assert(server:listen(128, function(err)
    assert(not err, err)
    local conn = uv.new_tcp()
    server:accept(conn)
    conn:nodelay(true)
    conn:read_start(function(rerr, data)
      if data then
        conn:write(data)
      else
        -- the end: queued echoes go out before the handle closes
        conn:shutdown(function() conn:close() end)
      end
      return rerr
    end)
  end))
  on_port(server:getsockname().port)
  return server
end

local function luv_throughput(secs, chunk_size)
  local chunk = string.rep("x", chunk_size)
  local received, sent, elapsed = 0, 0, nil
  local t0
  local server
  server = luv_server(function(port)
    local c = uv.new_tcp()
    c:connect("127.0.0.1", port, function(err)
      assert(not err, err)
      t0 = uv.hrtime()
      c:read_start(function(_, data)
        if data then
          received = received + #data
        else
          elapsed = (uv.hrtime() - t0) / 1e9
          c:close()
          server:close()
        end
      end)
      local function send()
        if (uv.hrtime() - t0) / 1e9 < secs then
          sent = sent + chunk_size
          c:write(chunk, send)
        else
          c:shutdown()
        end
      end
      send()
    end)
  end)
  uv.run()
  assert(received == sent, "luv echo lost data")
  return received, elapsed
end

local function luv_rate(secs, size)
  local msg = string.rep("x", size)
  local n, elapsed = 0, nil
  local server
  server = luv_server(function(port)
    local c = uv.new_tcp()
    c:connect("127.0.0.1", port, function(err)
      assert(not err, err)
      c:nodelay(true)
      local t0 = uv.hrtime()
      local got = 0
      c:read_start(function(_, data)
        if not data then return end
        got = got + #data
        if got >= size then
          got = got - size
          n = n + 1
          if n % 100 == 0 and (uv.hrtime() - t0) / 1e9 >= secs then
            elapsed = (uv.hrtime() - t0) / 1e9
            c:close()
            server:close()
          else
            c:write(msg)
          end
        end
      end)
      c:write(msg)
    end)
  end)
  uv.run()
  return n, elapsed
end

-- Running and printing --------------------------------------------------------

local function cpu_count()
  if ok_luv and uv.cpu_info then return #uv.cpu_info() end
  return "?"
end

-- Loopback figures drift with what else the machine does: each side runs
-- ROUNDS times, interleaved with the other, and keeps its best.
local s_mbps, s_rate, l_mbps, l_rate = 0, 0, nil, nil
local function best(a, b) return (a == nil or b > a) and b or a end
for _ = 1, ROUNDS do
  local bytes, secs = synchro_throughput(THROUGHPUT_SECS, CHUNK)
  s_mbps = best(s_mbps, bytes / secs / 1e6)
  if ok_luv then
    local lbytes, lsecs = luv_throughput(THROUGHPUT_SECS, CHUNK)
    l_mbps = best(l_mbps, lbytes / lsecs / 1e6)
  end
  local trips, rsecs = synchro_rate(RATE_SECS, MESSAGE)
  s_rate = best(s_rate, trips / rsecs)
  if ok_luv then
    local ltrips, lrsecs = luv_rate(RATE_SECS, MESSAGE)
    l_rate = best(l_rate, ltrips / lrsecs)
  end
end
local cert_dir = make_cert()
local st_mbps, st_hs, py_mbps, py_hs
if cert_dir then
  for _ = 1, ROUNDS do
    local a, b = synchro_tls(cert_dir, THROUGHPUT_SECS, CHUNK, RATE_SECS)
    if a then st_mbps, st_hs = best(st_mbps, a), best(st_hs, b) end
    local c, d = python_tls(cert_dir, THROUGHPUT_SECS, CHUNK, RATE_SECS)
    if c then py_mbps, py_hs = best(py_mbps, c), best(py_hs, d) end
  end
  os.execute("rm -rf " .. cert_dir)
end
local task_secs, task_bytes = sleeping_tasks(TASKS)
S:close()

local function fmt(v, unit)
  if v == nil then return "n/a" end
  return ("%.1f %s"):format(v, unit)
end

print(("synchro.aio.tcp echo over loopback: %s, %s CPUs")
  :format(rawget(_G, "jit") and jit.version or _VERSION, cpu_count()))
print(("%-44s %14s %14s %7s"):format("measure", "synchro", "luv", "ratio"))
print(string.rep("-", 82))
print(("%-44s %14s %14s %7s"):format(
  "echo throughput, 64 KiB writes, 1 conn", fmt(s_mbps, "MB/s"),
  fmt(l_mbps, "MB/s"), l_mbps and ("%.2f"):format(s_mbps / l_mbps) or ""))
print(("%-44s %14s %14s %7s"):format(
  "round trips, 64-byte messages, 1 conn", fmt(s_rate / 1e3, "k/s"),
  fmt(l_rate and l_rate / 1e3, "k/s"),
  l_rate and ("%.2f"):format(s_rate / l_rate) or ""))
local function ratio(x, y)
  return (x and y) and ("%.2f"):format(x / y) or ""
end
print(("%-44s %14s %14s %7s"):format("", "synchro", "py asyncio", ""))
print(("%-44s %14s %14s %7s"):format(
  "TLS echo throughput, 64 KiB writes, 1 conn", fmt(st_mbps, "MB/s"),
  fmt(py_mbps, "MB/s"), ratio(st_mbps, py_mbps)))
print(("%-44s %14s %14s %7s"):format(
  "TLS handshakes + 1-byte echo, one at a time", fmt(st_hs, "/s"),
  fmt(py_hs, "/s"), ratio(st_hs, py_hs)))
print(("%-44s %14s"):format(("%dk sleeping tasks (10 ms): spawn to finish")
  :format(math.floor(TASKS / 1000)), ("%.3f s"):format(task_secs)))
print(("%-44s %14s"):format("Lua memory per sleeping task (loop VM)",
  ("%.0f bytes"):format(task_bytes)))
print(("(echo rows: best of %d interleaved runs each; ratio: synchro / " ..
  "luv,\n TLS rows: synchro / Python asyncio+ssl; targets: throughput " ..
  ">= 0.80, 100k tasks <= 1 s and <= 1 KiB each)"):format(ROUNDS))
