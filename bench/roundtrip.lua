-- Round-trip benchmark: what one call into a Synchronizer costs, blocking,
-- awaited and as futures, from 1 to 8 OS threads, next to luv's
-- uv.new_work (a libuv thread-pool round trip driven from Lua).
-- Prints one table. Run: make bench (or tools/with-env.sh build/5.4
-- lua5.4 bench/roundtrip.lua). See docs/PERFORMANCE.md.
local synchro = require "synchro"
local core = require "synchro.core"

local now = core.now
local unpack = table.unpack or unpack

-- Sample counts: enough for a stable p99, small enough for < 60 s.
local SCALE = tonumber(os.getenv("SYNCHRO_BENCH_SCALE") or "1") or 1
local BLOCKING_SAMPLES = math.floor(200000 * SCALE)
local AIO_SAMPLES = math.floor(50000 * SCALE)
local FUTURES = math.floor(100000 * SCALE)
local THREAD_CALLS = math.floor(200000 * SCALE) -- per row, split over threads
local LUV_SAMPLES = math.floor(20000 * SCALE)
local WARMUP = 5000

local function percentile(sorted, p)
  local i = math.ceil(#sorted * p)
  if i < 1 then i = 1 end
  return sorted[i]
end

-- p50 and p99 of samples (seconds), in microseconds.
local function p50_p99(samples)
  table.sort(samples)
  return percentile(samples, 0.50) * 1e6, percentile(samples, 0.99) * 1e6
end

local rows = {}
local function row(measure, value, unit, target)
  rows[#rows + 1] = { measure, value, unit, target or "" }
end

local function cpu_count()
  local ok, uv = pcall(require, "luv")
  if ok and uv.cpu_info then return #uv.cpu_info() end
  local f = io.open("/proc/cpuinfo", "r")
  if not f then return "?" end
  local n = 0
  for line in f:lines() do
    if line:find("^processor") then n = n + 1 end
  end
  f:close()
  return n
end

local S = synchro.new({ name = "bench" })
local echo = S:wrap(function(x) return x end)

-- 1. Blocking calls, back to back, each one timed.
do
  for i = 1, WARMUP do echo(i) end
  local samples = {}
  for i = 1, BLOCKING_SAMPLES do
    local t0 = now()
    local v = echo(i)
    samples[i] = now() - t0
    if v ~= i then error("wrong result from echo") end
  end
  local p50, p99 = p50_p99(samples)
  rows.blocking_p50 = p50
  row("blocking call round trip, p50", p50, "µs", "<= 2 µs")
  row("blocking call round trip, p99", p99, "µs")
end

-- 2. .aio calls awaited by a synchro.run scheduler on this thread.
do
  local samples = {}
  synchro.run(function()
    for i = 1, WARMUP do echo.aio(i) end
    for i = 1, AIO_SAMPLES do
      local t0 = now()
      local v = echo.aio(i)
      samples[i] = now() - t0
      if v ~= i then error("wrong result from echo.aio") end
    end
  end)
  local p50, p99 = p50_p99(samples)
  row(".aio call from synchro.run, p50", p50, "µs", "<= 4 µs")
  row(".aio call from synchro.run, p99", p99, "µs")
end

-- 3. Futures: submit many, then collect every result.
do
  local futs = {}
  local t0 = now()
  for i = 1, FUTURES do futs[i] = echo.future(i) end
  for i = 1, FUTURES do
    if futs[i]:result() ~= i then error("wrong result from a future") end
  end
  local took = now() - t0
  row(("futures: submit %dk, then result each"):format(
    math.floor(FUTURES / 1000)), FUTURES / took / 1e3, "k calls/s")
end

-- 4. Blocking calls from several OS threads into the one Synchronizer.
local have_threads, threads = pcall(require, "synchro_test_threads")
local THREAD_CHUNK = [[
local tid, refs, n = ...
local synchro = require "synchro"
local core = require "synchro.core"
local threads = require "synchro_test_threads"
local S = synchro.import(refs[tid])
local echo = S:wrap(function(x) return x end)
for i = 1, 1000 do echo(i) end
threads.barrier()
local t0 = core.now()
for i = 1, n do
  if echo(i) ~= i then error("wrong result from echo") end
end
return t0, core.now()
]]
if have_threads then
  for _, k in ipairs({ 1, 2, 4, 8 }) do
    local refs = {}
    for i = 1, k do refs[i] = S:export() end
    local per = math.floor(THREAD_CALLS / k)
    local results = threads.run(k, THREAD_CHUNK, refs, per)
    local first, last = math.huge, -math.huge
    for i = 1, k do
      local r = results[i]
      if not r.ok then error("thread " .. i .. ": " .. tostring(r.value)) end
      first = math.min(first, r.values[1])
      last = math.max(last, r.values[2])
    end
    row(("calls/s, %d OS thread%s, blocking calls"):format(k,
      k > 1 and "s" or ""), per * k / (last - first) / 1e3, "k calls/s",
      k == 8 and ">= 500k/s" or nil)
  end
else
  row("calls/s from OS threads", 0 / 0, "",
    "(synchro_test_threads not built)")
end

S:close()

-- 5. The peer: luv's uv.new_work, one queue_work -> after_work round trip
-- driven by uv.run, each timed.
do
  local ok, uv = pcall(require, "luv")
  if ok then
    local results = 0
    local work = uv.new_work(function(x) return x end,
      function() results = results + 1 end)
    for i = 1, 200 do work:queue(i); uv.run() end
    local samples = {}
    for i = 1, LUV_SAMPLES do
      local t0 = now()
      work:queue(i)
      uv.run()
      samples[i] = now() - t0
    end
    if results ~= LUV_SAMPLES + 200 then error("luv lost a round trip") end
    local p50, p99 = p50_p99(samples)
    row("luv uv.new_work round trip, p50", p50, "µs")
    row("luv uv.new_work round trip, p99", p99, "µs")
    row("ratio luv p50 / synchro blocking p50", p50 / rows.blocking_p50,
      "x")
  else
    row("luv uv.new_work round trip", 0 / 0, "", "(luv not installed)")
  end
end

-- 6. The floor: bench/handoff.c (two threads handing off one coroutine
-- resume per call), built beside the module as bench-handoff.
do
  local dir = package.cpath:match("^([^;]*)/lua/%?%.so")
  local exe = dir and dir .. "/bench-handoff"
  local p = exe and io.open(exe) and io.popen(("%q %d"):format(exe,
    BLOCKING_SAMPLES))
  local line = p and p:read("*l")
  if p then p:close() end
  local p50, p99 = (line or ""):match("^handoff (%S+) (%S+)")
  if p50 then
    row("bare hand-off (bench/handoff.c), p50", tonumber(p50), "µs")
    row("bare hand-off, p99", tonumber(p99), "µs")
    row("ratio synchro blocking p50 / hand-off p50",
      rows.blocking_p50 / tonumber(p50), "x", "<= 3 x")
  else
    row("bare hand-off", 0 / 0, "", "(build bench-handoff: make build)")
  end
end

-- 7. The same blocking call and luv round trip with CPU hogs beside them
-- (SYNCHRO_BENCH_HOGS, default 2; 0 skips): a busy machine, where
-- spinning stops paying off and both sides must park well.
local HOGS = tonumber(os.getenv("SYNCHRO_BENCH_HOGS") or "2") or 2
if HOGS > 0 then
  local p = io.popen(("for i in $(seq %d); do sh -c 'while :; do :; done' " ..
    ">/dev/null 2>&1 & echo $!; done"):format(HOGS))
  local pids = {}
  for pid in p:lines() do pids[#pids + 1] = pid end
  p:close()
  local ok, err = pcall(function()
    local n = math.floor(BLOCKING_SAMPLES / 4)
    local S2 = synchro.new({ name = "bench-loaded" })
    local echo2 = S2:wrap(function(x) return x end)
    for i = 1, WARMUP do echo2(i) end
    local samples = {}
    for i = 1, n do
      local t0 = now()
      echo2(i)
      samples[i] = now() - t0
    end
    S2:close()
    local p50, p99 = p50_p99(samples)
    row(("%d CPU hogs: blocking call, p50"):format(HOGS), p50, "µs")
    row(("%d CPU hogs: blocking call, p99"):format(HOGS), p99, "µs")
    local has_luv, uv = pcall(require, "luv")
    if has_luv then
      local work = uv.new_work(function(x) return x end, function() end)
      for i = 1, 200 do work:queue(i); uv.run() end
      local lsamples = {}
      for i = 1, math.min(n, LUV_SAMPLES) do
        local t0 = now()
        work:queue(i)
        uv.run()
        lsamples[i] = now() - t0
      end
      local lp50, lp99 = p50_p99(lsamples)
      row(("%d CPU hogs: luv uv.new_work, p50"):format(HOGS), lp50, "µs")
      row(("%d CPU hogs: luv uv.new_work, p99"):format(HOGS), lp99, "µs")
      row("ratio synchro / luv p50 under hogs", p50 / lp50, "x", "<= 1 x")
    end
  end)
  os.execute("kill " .. table.concat(pids, " ") .. " 2>/dev/null")
  if not ok then error(err, 0) end
end

-- Pads s to width columns (UTF-8 aware: "µ" is two bytes, one column).
local function pad(s, width, right)
  local cols = #s - select(2, s:gsub("[\128-\191]", ""))
  local fill = (" "):rep(math.max(width - cols, 0))
  return right and fill .. s or s .. fill
end

local version = rawget(_G, "jit") and _G.jit.version or _VERSION
print(("synchro round trips: %s, %s CPUs"):format(version, cpu_count()))
print(pad("measure", 42) .. pad("value", 20, true) .. "  target")
print(("-"):rep(76))
for _, r in ipairs(rows) do
  local measure, value, unit, target = unpack(r)
  local shown = value ~= value and "n/a" or ("%.2f %s"):format(value, unit)
  print(pad(measure, 42) .. pad(shown, 20, true) .. "  " .. target)
end
