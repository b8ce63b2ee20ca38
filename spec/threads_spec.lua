-- Many OS threads calling one Synchronizer at once. Each thread runs in its
-- own lua_State (spec/helpers/threads.c) and reaches the shared
-- Synchronizer through S:export() / synchro.import().
local synchro = require "synchro"
local threads = require "synchro_test_threads"

local NTHREADS = 8
local NCALLS = 10000
-- Bounded waits: a reply whose wake-up is lost shows as a failed call
-- (while the loop itself still runs).
local HANG = 30

-- One exported reference per thread: each import takes one over.
local function export_refs(S, n)
  local refs = {}
  for i = 1, n do refs[i] = S:export() end
  return refs
end

local function check_all_ok(results, n)
  assert.are.equal(n, #results)
  for i = 1, n do
    local r = results[i]
    assert(r.ok, ("thread %d failed: %s"):format(i, tostring(r.value)))
  end
end

-- Sums result field k (1-based) over the threads.
local function sum(results, k)
  local total = 0
  for i = 1, #results do total = total + results[i].values[k] end
  return total
end

local BLOCKING = [[
local tid, refs, ncalls, hang = ...
local synchro = require "synchro"
local threads = require "synchro_test_threads"
local S = synchro.import(refs[tid])
-- Every thread wraps its own function; all of them share the loop VM's
-- globals, where they count the calls they see per thread.
local f = S:wrap(function(i, t)
  local seen = package.loaded["spec.threads.seen"]
  if seen == nil then
    seen = {}
    package.loaded["spec.threads.seen"] = seen
  end
  local last = seen[t] or 0
  seen[t] = i
  if i % 1000 == 0 then error("bad number " .. i, 0) end
  return i * 2 + t, last
end, { timeout = hang })
threads.barrier()
local bad, calls, errors = 0, 0, 0
for i = 1, ncalls do
  local ok, v, last = pcall(f, i, tid)
  calls = calls + 1
  if i % 1000 == 0 then
    -- the message, then the remote traceback
    if ok or v:find("bad number " .. i .. "\n", 1, true) ~= 1 then
      bad = bad + 1
    else
      errors = errors + 1
    end
  elseif not ok or v ~= i * 2 + tid or last ~= i - 1 then
    bad = bad + 1
  end
end
return bad, calls, errors
]]

local FUTURES = [[
local tid, refs, ncalls, hang = ...
local synchro = require "synchro"
local threads = require "synchro_test_threads"
local S = synchro.import(refs[tid])
local f = S:wrap(function(i, t) return i * 2 + t, t end)
threads.barrier()
local bad, calls, batch = 0, 0, 500
for first = 1, ncalls, batch do
  local futs = {}
  for i = first, math.min(first + batch - 1, ncalls) do
    futs[#futs + 1] = f.future(i, tid)
  end
  -- Collect in reverse, so that many complete before they are waited for.
  for k = #futs, 1, -1 do
    local i = first + k - 1
    local v, t = futs[k]:result(hang)
    calls = calls + 1
    if v ~= i * 2 + tid or t ~= tid or not futs[k]:done() then
      bad = bad + 1
    end
  end
end
return bad, calls
]]

local RUN = [[
local tid, refs, ncalls = ...
local synchro = require "synchro"
local threads = require "synchro_test_threads"
local S = synchro.import(refs[tid])
local f = S:wrap(function(i, t) return i * 2 + t end)
threads.barrier()
return synchro.run(function()
  local bad, calls = 0, 0
  for first = 1, ncalls, 4 do
    -- Two awaited one after the other, two at once.
    local a = f.aio(first, tid)
    local b = f(first + 1, tid) -- plain call inside async code awaits too
    local c, d = synchro.gather(f.future(first + 2, tid),
      f.future(first + 3, tid))
    local got = { a, b, c, d }
    for k = 1, 4 do
      calls = calls + 1
      if got[k] ~= (first + k - 1) * 2 + tid then bad = bad + 1 end
    end
  end
  return bad, calls
end)
]]

describe("many OS threads calling one Synchronizer", function()
  local S

  before_each(function() S = synchro.new({ name = "threads" }) end)
  after_each(function() S:close() end)

  it("8 threads x 10,000 blocking calls, each thread wrapping its own",
    function()
      local results = threads.run(NTHREADS, BLOCKING,
        export_refs(S, NTHREADS), NCALLS, HANG)
      check_all_ok(results, NTHREADS)
      assert.are.equal(0, sum(results, 1))
      assert.are.equal(NTHREADS * NCALLS, sum(results, 2))
      assert.are.equal(NTHREADS * NCALLS / 1000, sum(results, 3))
      -- The threads' VMs are closed; the Synchronizer still serves.
      assert.are.equal("running", S:state())
      local count = S:wrap(function()
        local seen, n = package.loaded["spec.threads.seen"], 0
        for _, last in pairs(seen) do n = n + last end
        return n
      end)
      assert.are.equal(NTHREADS * NCALLS, count())
    end)

  it("8 threads x 5,000 futures, collected out of order", function()
    local n = 5000
    local results = threads.run(NTHREADS, FUTURES, export_refs(S, NTHREADS),
      n, HANG)
    check_all_ok(results, NTHREADS)
    assert.are.equal(0, sum(results, 1))
    assert.are.equal(NTHREADS * n, sum(results, 2))
  end)

  it("8 threads each running synchro.run with .aio calls", function()
    local n = 2000
    local results = threads.run(NTHREADS, RUN, export_refs(S, NTHREADS), n)
    check_all_ok(results, NTHREADS)
    assert.are.equal(0, sum(results, 1))
    assert.are.equal(NTHREADS * n, sum(results, 2))
  end)

  it("a thread's error stays in that thread", function()
    local results = threads.run(3, [[
      local tid, refs = ...
      local synchro = require "synchro"
      local S = synchro.import(refs[tid])
      local f = S:wrap(function(t) if t == 2 then error("no " .. t, 0) end
        return t end)
      return f(tid)
    ]], export_refs(S, 3))
    assert.is_true(results[1].ok)
    assert.are.equal(1, results[1].value)
    assert.is_false(results[2].ok)
    assert.matches("no 2", results[2].value, 1, true)
    assert.is_true(results[3].ok)
    assert.are.equal(3, results[3].value)
  end)

  it("a closed Synchronizer fails the calls of every thread at once",
    function()
      local refs = export_refs(S, 4)
      S:close()
      local results = threads.run(4, [[
        local tid, refs = ...
        local synchro = require "synchro"
        local S = synchro.import(refs[tid])
        local ok, err = pcall(S.wrap, S, function() end)
        return ok, err
      ]], refs)
      for i = 1, 4 do
        assert.is_true(results[i].ok)
        assert.is_false(results[i].values[1])
        assert.matches("closed", results[i].values[2], 1, true)
      end
    end)
end)
