-- TCP echo over loopback: synchro.aio.tcp next to the same echo written
-- with luv, in the same run; and 100k concurrent sleeping tasks.
--
-- synchro: server and client are both async code on one synchronizer's
-- loop (one wrapped call runs the whole measurement), so the figures are
-- those of the loop side: the buffered stream, the scheduler, the C
-- binding. luv: one luv loop on the main thread, run to completion.
-- Both echo servers write back what they read; the synchro one waits for
-- each write to complete (back pressure), the luv one queues it.
--
-- Run: tools/with-env.sh build/5.4 lua5.4 bench/tcp_echo.lua
-- SYNCHRO_BENCH_SCALE=0.3 shortens every phase. Takes about 12 s.
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
        conn:close()
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
print(("%-44s %14s"):format(("%dk sleeping tasks (10 ms): spawn to finish")
  :format(math.floor(TASKS / 1000)), ("%.3f s"):format(task_secs)))
print(("%-44s %14s"):format("Lua memory per sleeping task (loop VM)",
  ("%.0f bytes"):format(task_bytes)))
print(("(echo rows: best of %d interleaved runs each; ratio: synchro / " ..
  "luv;\n targets: throughput >= 0.80, 100k tasks <= 1 s and <= 1 KiB " ..
  "each)"):format(ROUNDS))
