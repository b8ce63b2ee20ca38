-- One call protocol (issue: timeouts honoured by every way of calling, the
-- grace governs every cancellation wait, one rule for time values, no
-- unknown option names, no lost callback). Each case below failed before
-- the protocol was one.
local synchro = require "synchro"
local util = require "spec.helpers.util"
local threads = require "synchro_test_threads"

-- Generous bounds that catch a hang or a wait for the old 5 s default,
-- and still hold on a loaded machine.
local SLOW = 2.5

local function pack(...) return { n = select("#", ...), ... } end

local function elapsed(fn, ...)
  local t0 = util.now()
  local r = pack(fn(...))
  return util.now() - t0, r
end

describe("one call protocol", function()
  local S, sleeper, stubborn
  setup(function()
    S = synchro.new({ name = "protocol", grace = 0.3 })
    -- sleeps far longer than any timeout here
    sleeper = S:wrap(function(marker)
      local aio = require "synchro.aio"
      local ok, err = pcall(aio.sleep, 30)
      if marker then
        local f = io.open(marker, "w")
        f:write(ok and "finished" or "cleanup") f:close()
      end
      if not ok then error(err, 0) end
      return "late"
    end, { timeout = 0.1 })
    -- its cleanup swallows the cancellation and returns normally
    stubborn = S:wrap(function()
      local aio = require "synchro.aio"
      pcall(aio.sleep, 30)
      return "results after the deadline"
    end, { timeout = 0.1 })
  end)
  teardown(function() S:close() end)

  describe("wrap{timeout=} applies to every way of calling", function()
    it("a blocking call returns ETIMEDOUT and the cleanup ran", function()
      local marker = util.tmpname()
      local dt, r = elapsed(sleeper, marker)
      assert.is_nil(r[1])
      assert.matches("^ETIMEDOUT", r[2])
      assert.are.equal("ETIMEDOUT", r[3])
      assert.is_true(dt < SLOW, "took " .. dt)
      assert.are.equal("cleanup", util.read(marker))
      os.remove(marker)
    end)

    it("a future times out without anyone waiting on it", function()
      local fut = sleeper.future()
      assert.is_true(fut:wait(SLOW * 2), "the future never finished")
      assert.are.equal("timedout", fut:status())
      local v, msg, code = fut:result()
      assert.is_nil(v)
      assert.matches("^ETIMEDOUT", msg)
      assert.are.equal("ETIMEDOUT", code)
    end)

    it(".aio and the auto-detected await inside synchro.run", function()
      local r = { synchro.run(function()
        local a = { sleeper.aio() }
        local b = { sleeper() } -- awaits: we are in async code
        return a[3], b[3]
      end) }
      assert.are.same({ "ETIMEDOUT", "ETIMEDOUT" }, r)
    end)

    it("from a cqueues controller", function()
      local ok, cqueues = pcall(require, "cqueues")
      if not ok then return pending("cqueues is not installed here") end
      require "synchro.cqueues"
      local cq = cqueues.new()
      local got
      cq:wrap(function() got = { sleeper() } end)
      local t0 = util.now()
      while not got and util.now() - t0 < SLOW * 2 do
        assert(cq:step(0.05))
      end
      assert.is_table(got, "the awaited call never timed out")
      assert.are.equal("ETIMEDOUT", got[3])
    end)

    it("from a synchro.luv coroutine", function()
      local ok, uv = pcall(require, "luv")
      if not ok then return pending("luv is not installed here") end
      local sluv = require "synchro.luv"
      local got
      sluv.run(function() got = { sleeper() } end)
      local t0 = util.now()
      while not got and util.now() - t0 < SLOW * 2 do uv.run("once") end
      assert.is_table(got, "the awaited call never timed out")
      assert.are.equal("ETIMEDOUT", got[3])
    end)

    it("a task that returns normally after the deadline still times out",
      function()
        local v, msg, code = stubborn()
        assert.is_nil(v, "got results after the deadline: " .. tostring(v))
        assert.matches("^ETIMEDOUT", msg)
        assert.are.equal("ETIMEDOUT", code)
        local fut = stubborn.future()
        fut:wait(SLOW * 2)
        assert.are.equal("timedout", fut:status())
      end)
  end)

  it("grace= governs the cleanup wait after a timeout", function()
    -- cleanup that takes 3 s inside a shield; the grace is 0.3 s
    local G = synchro.new({ grace = 0.3 })
    local slow_cleanup = G:wrap(function()
      local aio = require "synchro.aio"
      local ok = pcall(aio.sleep, 30)
      if not ok then aio.shield(aio.sleep, 3) end
      return "done"
    end, { timeout = 0.1 })
    local dt, r = elapsed(slow_cleanup)
    assert.are.equal("ETIMEDOUT", r[3])
    -- timeout + grace + the bound for an unreachable loop, far from 5 s
    assert.is_true(dt < 0.1 + 0.3 + 2 + SLOW, "took " .. dt)
    G:close(0)
  end)

  describe("one rule for time values", function()
    local TIMES = { 0, -1, 0 / 0, math.huge, 1e300, 2 ^ 63 }
    local function nan(t) return t ~= t end
    local function never(t) return t == math.huge or t > 1e9 end

    it("S:wrap{timeout=}", function()
      local quick = function() return "ok" end
      for _, t in ipairs(TIMES) do
        if nan(t) then
          assert.has_error(function() S:wrap(quick, { timeout = t }) end,
            "bad argument #2 to 'wrap' (timeout is NaN)")
        else
          local f = S:wrap(function()
            require("synchro.aio").sleep(0.05)
            return "ok"
          end, { timeout = t })
          local v, _, code = f()
          if never(t) then
            assert.are.equal("ok", v, "timeout " .. t .. " cut the call")
          else
            assert.are.equal("ETIMEDOUT", code, "timeout " .. t)
          end
        end
      end
    end)

    it("fut:wait and fut:result", function()
      local slow = S:wrap(function()
        require("synchro.aio").sleep(0.3)
        return "ok"
      end)
      for _, t in ipairs(TIMES) do
        local fut = slow.future()
        if nan(t) then
          assert.has_error(function() fut:wait(t) end)
          assert.has_error(function() fut:result(t) end)
        elseif never(t) then
          assert.is_true(fut:wait(t), "wait(" .. t .. ") returned early")
          assert.are.equal("ok", fut:result(t))
        else
          assert.is_false(fut:wait(t), "wait(" .. t .. ")")
          local v, _, code = fut:result(t)
          assert.is_nil(v)
          assert.are.equal("ETIMEDOUT", code)
          fut:cancel()
        end
      end
    end)

    it("aio.sleep and aio.timeout", function()
      local probe = S:wrap(function(t)
        local aio = require "synchro.aio"
        local okc, errc = pcall(aio.sleep, t)
        local slept = okc and "returned" or errc
        local okt, a, _, code = pcall(aio.timeout, t, function()
          aio.sleep(0.05)
          return "ran"
        end)
        if not okt then return slept, a end
        return slept, a or code
      end, { timeout = 0.2 })
      for _, t in ipairs(TIMES) do
        local slept, timed, code = probe(t)
        if nan(t) then
          assert.matches("sleep.*NaN", slept)
          assert.matches("timeout.*NaN", timed)
        elseif never(t) then
          -- slept until the wrap's timeout cut it
          assert.are.equal("ETIMEDOUT", code, "sleep(" .. t .. ") returned")
        else
          assert.are.equal("returned", slept, "sleep(" .. t .. ")")
          assert.are.equal("ETIMEDOUT", timed, "timeout(" .. t .. ")")
        end
      end
    end)

    it("synchro.new{grace=} and S:close(grace)", function()
      assert.has_error(function() synchro.new({ grace = 0 / 0 }) end,
        "bad argument #1 to 'new' (grace is NaN)")
      local G = synchro.new({ grace = math.huge })
      local started = G:wrap(function() return true end)
      assert.is_true(started())
      assert.has_error(function() G:close(0 / 0) end)
      for _, t in ipairs({ -1, 0, math.huge, 1e300, 2 ^ 63 }) do
        local H = synchro.new()
        local cleanup = util.tmpname()
        local f = H:wrap(function(path)
          local aio = require "synchro.aio"
          local ok = pcall(aio.sleep, 30)
          if not ok then
            local fh = io.open(path, "w")
            fh:write("cleanup") fh:close()
          end
        end)
        local fut = f.future(cleanup)
        util.wait_for(function() return H:state() == "running" end, 5)
        util.sleep(0.1) -- the task sleeps in its pcall now
        local dt = elapsed(H.close, H, t)
        assert.is_true(dt < SLOW, "close(" .. t .. ") took " .. dt)
        if t ~= -1 and t ~= 0 then
          assert.are.equal("cleanup", util.read(cleanup),
            "close(" .. t .. ") gave cleanup no time")
        end
        assert.is_true(fut:done())
        os.remove(cleanup)
      end
    end)

    it("aio.interval", function()
      local probe = S:wrap(function()
        local aio = require "synchro.aio"
        local out = {}
        local ok, err = pcall(aio.interval, 0 / 0)
        out[1] = ok and "no error" or err
        local every = aio.interval(0) -- every step of the loop
        out[2] = every:tick() == 1 and every:tick() == 2
        local forever = aio.interval(math.huge)
        out[3] = aio.timeout(0.05, function() return forever:tick() end)
        return out
      end)
      local out = probe()
      assert.matches("interval.*NaN", out[1])
      assert.is_true(out[2])
      assert.is_nil(out[3]) -- timed out: no tick ever
    end)
  end)

  describe("unknown option names are errors that name them", function()
    it("synchro.new and S:wrap", function()
      assert.has_error(function() synchro.new({ nmae = "x" }) end,
        "bad argument #1 to 'new' (unknown option 'nmae' (options: name, " ..
        "grace, slow))")
      assert.has_error(function()
        S:wrap(function() end, { timout = 5 })
      end, "bad argument #2 to 'wrap' (unknown option 'timout' (options: " ..
        "timeout, name))")
    end)

    it("every aio function that takes options", function()
      local probe = S:wrap(function()
        local aio = require "synchro.aio"
        local errs = {}
        local function try(fn, ...)
          local ok, err = pcall(fn, ...)
          errs[#errs + 1] = ok and "no error" or err
        end
        try(aio.tcp.connect, "127.0.0.1", 1, { timout = 1 })
        try(aio.tcp.listen, "127.0.0.1", 0, nil, { backlg = 1 })
        try(aio.udp.bind, "127.0.0.1", 0, { reuse = true })
        try(aio.dns.getaddrinfo, "localhost", nil, { famly = "inet" })
        try(aio.dns.getnameinfo, "127.0.0.1", 80, { numerc = true })
        try(require("synchro.aio.thread").configure, { wrkers = 2 })
        try(aio.gather, { return_error = true }, function() end)
        return errs
      end)
      local errs = probe()
      local names = { "timout", "backlg", "reuse", "famly", "numerc",
        "wrkers", "return_error" }
      for i, name in ipairs(names) do
        assert.matches("unknown option '" .. name .. "'", errs[i], 1, true)
      end
    end)
  end)
end)

describe("callbacks called at once by the task", function()
  local S
  setup(function() S = synchro.new({ name = "callback-race" }) end)
  teardown(function() S:close() end)

  -- Before the fix the call was sent before its caller registered to
  -- serve callbacks: 1-5 calls in 50,000 failed with "callback called
  -- after the call that passed it returned".
  it("16 threads x 10,000 blocking calls that each pass a callback",
    function()
      local refs = {}
      for i = 1, 16 do refs[i] = S:export() end
      local results = threads.run(16, [[
        local tid, refs, n = ...
        local synchro = require "synchro"
        local threads = require "synchro_test_threads"
        local S = synchro.import(refs[tid])
        local call_back = S:wrap(function(fn, i) return fn(i) + 1 end)
        threads.barrier()
        local bad, first = 0, nil
        for i = 1, n do
          local ok, v = pcall(call_back, function(x) return x * 2 end, i)
          if not ok or v ~= i * 2 + 1 then
            bad = bad + 1
            first = first or tostring(v)
          end
        end
        return bad, first
      ]], refs, 10000)
      assert.are.equal(16, #results)
      for i = 1, 16 do
        local r = results[i]
        assert(r.ok, ("thread %d failed: %s"):format(i, tostring(r.value)))
        assert.are.equal(0, r.values[1], "thread " .. i .. ": " ..
          tostring(r.values[2]))
      end
    end)

  -- The same calls through the other waiter of an inbox: synchro.run's
  -- scheduler, whose notifier:take resets the inbox's event, then takes
  -- (the reset-then-take that lost wakeups in the blocking caller; the
  -- C test test_notifier_wake_race is the one that catches that).
  it("8 threads x 3,000 .aio calls from synchro.run that pass a callback",
    function()
      local refs = {}
      for i = 1, 8 do refs[i] = S:export() end
      local results = threads.run(8, [[
        local tid, refs, n = ...
        local synchro = require "synchro"
        local core = require "synchro.core"
        local threads = require "synchro_test_threads"
        local S = synchro.import(refs[tid])
        local call_back = S:wrap(function(fn, i) return fn(i) + 1 end)
        threads.barrier()
        local bad, first, done = 0, nil, 0
        local t0 = core.now()
        synchro.run(function()
          for i = 1, n do
            local v = call_back.aio(function(x) return x * 2 end, i)
            if v ~= i * 2 + 1 then
              bad = bad + 1
              first = first or tostring(v)
            end
            done = i
          end
        end)
        return bad, first, done, core.now() - t0
      ]], refs, 3000)
      assert.are.equal(8, #results)
      for i = 1, 8 do
        local r = results[i]
        assert(r.ok, ("thread %d failed: %s"):format(i, tostring(r.value)))
        assert.are.equal(0, r.values[1], "thread " .. i .. ": " ..
          tostring(r.values[2]))
        assert.are.equal(3000, r.values[3])
      end
    end)
end)
