-- Marshal benchmark: what values cost to cross, echoed through a blocking
-- wrapped call (the value is encoded, decoded in the loop VM, encoded
-- back and decoded again: four passes). Peers in the same run: luv's
-- uv.new_work echo (it copies strings across its threads too; it cannot
-- carry tables) and, for tables, the floor of copying the same table
-- inside one Lua state. Prints one table. Run: tools/with-env.sh
-- build/5.4 lua5.4 bench/marshal.lua (SYNCHRO_BENCH_SCALE shrinks it).
-- See docs/PERFORMANCE.md.
local synchro = require "synchro"
local core = require "synchro.core"

local now = core.now
local SCALE = tonumber(os.getenv("SYNCHRO_BENCH_SCALE") or "1") or 1

local function reps(n) return math.max(3, math.floor(n * SCALE)) end

-- Minor page faults of this process so far (Linux), or nil.
local function minflt()
  local f = io.open("/proc/self/stat", "r")
  if not f then return nil end
  local line = f:read("*l")
  f:close()
  -- fields after the ")" that ends the command name: state is field 3,
  -- minflt field 10
  local rest = line and line:match("%) (.*)$")
  if not rest then return nil end
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  return tonumber(fields[8])
end

-- Best (lowest) seconds per run of fn over rounds, each round n runs.
local function best_of(rounds, n, fn)
  local best = math.huge
  for _ = 1, rounds do
    local t0 = now()
    for _ = 1, n do fn() end
    local dt = (now() - t0) / n
    if dt < best then best = dt end
  end
  return best
end

local rows = {}
local function row(measure, value, unit, target)
  rows[#rows + 1] = { measure, value, unit, target or "" }
end

local S = synchro.new({ name = "bench-marshal" })
local echo = S:wrap(function(x) return x end)

local big = ("0123456789abcdef"):rep(65536) -- 1 MiB
local mid = big:sub(1, 65536)
local ints, floats, fields, nested = {}, {}, {}, {}
for i = 1, 10000 do ints[i] = i * 7 end
for i = 1, 10000 do floats[i] = i + 0.5 end
for i = 1, 1000 do fields["key" .. i] = i end
for i = 1, 100 do
  local t = {}
  for j = 1, 10 do t[j] = i * j end
  nested[i] = t
end

local function check(v, want)
  if v ~= want then error("echo lost data", 2) end
end

-- strings
local ok_luv, uv = pcall(require, "luv")
local function luv_echo_secs(value, n)
  if not ok_luv then return nil end
  local work = uv.new_work(function(x) return x end, function() end)
  return best_of(3, n, function()
    work:queue(value)
    uv.run()
  end)
end

for _, case in ipairs({ { "1 MiB string", big, reps(300) },
                        { "64 KiB string", mid, reps(3000) } }) do
  local name, value, n = case[1], case[2], case[3]
  for _ = 1, 5 do check(echo(value), value) end
  local f0 = minflt()
  local secs = best_of(3, n, function() check(echo(value), value) end)
  local f1 = minflt()
  row(name .. " echo", #value / secs / 1e9, "GB/s",
    name == "1 MiB string" and ">= 4 GB/s" or nil)
  if f0 and f1 then
    row(name .. " echo, page faults per echo", (f1 - f0) / (3 * n), "")
  end
  local lsecs = luv_echo_secs(value, n)
  if lsecs then
    row(name .. " echo, luv uv.new_work", #value / lsecs / 1e9, "GB/s")
    row("ratio synchro / luv", lsecs / secs, "x")
  end
end

-- tables
local function copy(t)
  local c = {}
  for k, v in pairs(t) do
    c[k] = type(v) == "table" and copy(v) or v
  end
  return c
end

for _, case in ipairs({ { "10k-integer array", ints, reps(300) },
                        { "10k-float array", floats, reps(300) },
                        { "1k string-keyed fields", fields, reps(1000) },
                        { "100 x 10 nested arrays", nested, reps(1000) } }) do
  local name, value, n = case[1], case[2], case[3]
  local back = echo(value)
  local last, want = back[#back], value[#value]
  if type(want) == "table" then last, want = last[#last], want[#want] end
  if #back ~= #value or last ~= want then
    error(name .. ": echo lost data")
  end
  local secs = best_of(3, n, function() echo(value) end)
  local floor = best_of(3, n, function() copy(value) end)
  row(name .. " echo", secs * 1e3, "ms",
    name == "10k-integer array" and "<= 0.5 ms" or nil)
  row(name .. ", copy in one Lua state", floor * 1e3, "ms")
  row("ratio synchro / copy", secs / floor, "x")
end

S:close()

print(("synchro marshal: %s, %s"):format(_VERSION,
  jit and jit.version or "PUC"))
print(("%-44s %14s  %s"):format("measure", "value", "target"))
print(("-"):rep(70))
for _, r in ipairs(rows) do
  local v = r[2]
  local s = v ~= v and "n/a" or ("%.3f %s"):format(v, r[3])
  print(("%-44s %14s  %s"):format(r[1], s, r[4]))
end
