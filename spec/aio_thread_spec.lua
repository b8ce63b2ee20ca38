-- aio.run_in_thread: blocking Lua functions on a pool of worker VMs.
-- The blocking functions spin on the clock rather than run a subprocess,
-- so that this spec also runs under TSan (whose preloaded runtime breaks
-- child processes).
local synchro = require "synchro"
local util = require "spec.helpers.util"

-- Threads of this process.
local function thread_count()
  return tonumber(util.read("/proc/self/status"):match("Threads:%s*(%d+)"))
end

-- Blocks the calling thread for about `seconds` (runs on a worker).
local function spin(seconds)
  local now = require("synchro.core").now
  local deadline = now() + seconds
  while now() < deadline do end
end

describe("aio.run_in_thread", function()
  local S
  setup(function() S = synchro.new({ name = "thread-spec" }) end)
  teardown(function() S:close() end)

  local function run(fn, ...) return S:wrap(fn)(...) end

  it("returns the function's results, copied", function()
    local n, a, b, c, t = run(function()
      local aio = require "synchro.aio"
      local function f(x, y, tbl)
        return x + y, nil, "s", { sum = tbl[1] + tbl[2], nested = { tbl } }
      end
      local r = { n = select("#", aio.run_in_thread(f, 1, 2, { 3, 4 })),
        aio.run_in_thread(f, 1, 2, { 3, 4 }) }
      return r.n, r[1], r[2], r[3], r[4]
    end)
    assert.are.equal(4, n)
    assert.are.equal(3, a)
    assert.is_nil(b)
    assert.are.equal("s", c)
    assert.are.same({ sum = 7, nested = { { 3, 4 } } }, t)
  end)

  it("runs a function with upvalues, and the worker's globals", function()
    local a, b, c = run(function()
      local aio = require "synchro.aio"
      local base, scale = 10, { by = 3 }
      local function helper(x) return x * scale.by end
      return aio.run_in_thread(function(x)
        return base + helper(x), type(string.format), _VERSION
      end, 2)
    end)
    assert.are.equal(16, a)
    assert.are.equal("function", b)
    assert.are.equal(_VERSION, c)
  end)

  it("raises the function's errors with the worker's traceback", function()
    local s, tb, t, bad = run(function()
      local aio = require "synchro.aio"
      local ok1, e1 = pcall(aio.run_in_thread, function()
        error("boom")
      end)
      local ok2, e2 = pcall(aio.run_in_thread, function()
        error({ code = 42, list = { 1, 2 } })
      end)
      local ok3, e3 = pcall(aio.run_in_thread, function()
        return io.stdout
      end)
      assert(not ok1 and not ok2 and not ok3)
      return e1, e1:match("%[worker thread%] stack traceback:\n") ~= nil,
        e2, e3
    end)
    assert.matches("aio_thread_spec.lua:%d+: boom$", s:match("^[^\n]*"))
    assert.is_true(tb)
    assert.are.same({ code = 42, list = { 1, 2 } }, t)
    assert.matches("bad result #1 %(results%[1%]: cannot send userdata%)",
      bad)
  end)

  it("runs four blocking calls at once", function()
    local secs, results = run(function()
      local aio = require "synchro.aio"
      local t0 = aio.now()
      local function job(i)
        return function()
          return aio.run_in_thread(function(k)
            spin(0.2)
            return k * k
          end, i)
        end
      end
      local r = { aio.gather(job(1), job(2), job(3), job(4)) }
      return aio.now() - t0, r
    end)
    assert.are.same({ 1, 4, 9, 16 }, results)
    -- one after another would take 0.8 s
    assert.is_true(secs < 0.7, "took " .. secs)
  end)

  it("keeps the loop responsive while a worker blocks", function()
    local order = run(function()
      local aio = require "synchro.aio"
      local order = {}
      aio.gather(function()
        aio.run_in_thread(function() spin(0.5) end)
        order[#order + 1] = "worker"
      end, function()
        aio.sleep(0.05)
        order[#order + 1] = "sleeper"
      end)
      return order
    end)
    assert.are.same({ "sleeper", "worker" }, order)
  end)

  it("reuses a bounded pool of VMs", function()
    local stats, sum = run(function()
      local aio = require "synchro.aio"
      local thread = require "synchro.aio.thread"
      local total = 0
      for i = 1, 100 do
        total = total + aio.run_in_thread(function(x) return x end, i)
      end
      -- 8 at once on at most 4 workers
      local fns = {}
      for i = 1, 8 do
        fns[i] = function()
          return aio.run_in_thread(function() spin(0.05) end)
        end
      end
      aio.gather((table.unpack or unpack)(fns))
      return thread.stats(), total
    end)
    assert.are.equal(5050, sum)
    assert.is_true(stats.vms >= 1 and stats.vms <= 4, "vms " .. stats.vms)
    assert.is_true(stats.workers <= 4)
    assert.are.equal(4, stats.max)
    assert.are.equal(0, stats.queued)
  end)

  it("drops a cancelled job that has not started", function()
    local marker = util.tmpname()
    local r = run(function(path)
      local aio = require "synchro.aio"
      local thread = require "synchro.aio.thread"
      local core = require "synchro.core"
      local before = core.loop_handles()
      thread.configure({ workers = 1 })
      local busy = aio.spawn(aio.run_in_thread, function()
        spin(0.3)
      end)
      aio.sleep(0.05) -- the only worker is now busy
      local t0 = aio.now()
      local a, _, c = aio.timeout(0.05, aio.run_in_thread, function(p)
        local f = io.open(p, "w")
        f:write("ran")
        f:close()
      end, path)
      local secs = aio.now() - t0
      local queued = thread.stats().queued
      busy:join()
      aio.sleep(0.1)
      thread.configure({ workers = 4 })
      return { a, c, secs, queued, before, core.loop_handles() }
    end, marker)
    local ran = util.read(marker)
    os.remove(marker)
    assert.is_nil(r[1])
    assert.are.equal("ETIMEDOUT", r[2])
    assert.is_true(r[3] < 0.25, "took " .. r[3]) -- not after the busy one
    assert.are.equal(0, r[4])
    assert.are.equal(r[5], r[6])
    assert.is_nil(ran)
  end)

  it("interrupts a running function and waits for its cleanup before " ..
    "raising cancellation", function()
    local marker = util.tmpname()
    local a, c, done, dt = run(function(path)
      local aio = require "synchro.aio"
      local t0 = aio.now()
      local x, _, z = aio.timeout(0.05, aio.run_in_thread, function(p)
        if jit then jit.off(spin) end -- compiled loops run no hooks
        local ok, err = pcall(spin, 30)
        local f = io.open(p, "w")
        f:write(tostring(ok) .. " " .. tostring(err))
        f:close()
      end, path)
      local f = io.open(path)
      local text = f and f:read("*a")
      if f then f:close() end
      return x, z, text, aio.now() - t0
    end, marker)
    os.remove(marker)
    assert.is_nil(a)
    assert.are.equal("ETIMEDOUT", c)
    assert.are.equal("false ECANCELED: the job was cancelled", done)
    assert.is_true(dt < 5, "took " .. dt .. " s")
  end)

  it("leaks no handles", function()
    local before, after = run(function()
      local aio = require "synchro.aio"
      local core = require "synchro.core"
      local n0 = core.loop_handles()
      for i = 1, 10 do aio.run_in_thread(function(x) return x end, i) end
      pcall(aio.run_in_thread, error, "x")
      return n0, core.loop_handles()
    end)
    assert.are.equal(before, after)
  end)

  it("raises on misuse", function()
    local r = run(function()
      local aio = require "synchro.aio"
      local thread = require "synchro.aio.thread"
      local out = {}
      local function try(...)
        local ok, err = pcall(...)
        out[#out + 1] = not ok and tostring(err):match("bad argument.*")
      end
      try(aio.run_in_thread, 42)
      try(aio.run_in_thread, function() end, 1, io.stdout)
      local f = io.stdout
      try(aio.run_in_thread, function() return f end)
      try(thread.configure, { workers = 0 })
      try(thread.configure, 4)
      return out
    end)
    assert.are.same({
      "bad argument #1 to 'run_in_thread' (function expected, got number)",
      "bad argument #3 to 'run_in_thread' (args[2]: cannot send userdata)",
      "bad argument #1 to 'run_in_thread' (fn[1][upvalue \"f\"]: " ..
        "cannot send userdata)",
      "bad argument #1 to 'configure' (workers must be an integer >= 1)",
      "bad argument #1 to 'configure' (table expected, got number)",
    }, r)
  end)

  it("stops its workers and their VMs when the loop closes", function()
    local threads = thread_count()
    local S2 = synchro.new({ name = "thread-idle" })
    local n = S2:wrap(function()
      local aio = require "synchro.aio"
      aio.gather(function() return aio.run_in_thread(spin, 0.05) end,
        function() return aio.run_in_thread(spin, 0.05) end)
      return require("synchro.aio.thread").stats().workers
    end)()
    assert.are.equal(2, n)
    assert.are.equal(threads + 3, thread_count()) -- the loop and 2 workers
    S2:close()
    assert.are.equal(threads, thread_count())
  end)

  it("does not wait for a blocked worker when the loop closes", function()
    local threads = thread_count()
    local S2 = synchro.new({ name = "thread-close" })
    local fut = S2:wrap(function()
      return require("synchro.aio").run_in_thread(function()
        spin(1)
        return "late"
      end)
    end).future()
    util.sleep(0.1)
    local t0 = util.now()
    S2:close(0.05)
    local secs = util.now() - t0
    assert.is_true(fut:done())
    assert.is_false(pcall(fut.result, fut))
    assert.is_true(secs < 0.9, "close took " .. secs)
    -- the worker ends on its own once the function returns
    assert.is_true(util.wait_for(function()
      return thread_count() == threads
    end, 10))
  end)
end)
