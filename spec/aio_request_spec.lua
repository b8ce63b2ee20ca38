-- The one request primitive (src/aio/request.c, aio/request.lua) under
-- attack: cancellation at once after submit, many concurrent requests
-- cancelled at random, a synchronizer closed with hundreds of fs and dns
-- requests in flight, and results that must never reach a cancelled
-- request's function.
local synchro = require "synchro"
local util = require "spec.helpers.util"

describe("aio request primitive", function()
  local S, dir, fds, in_flight

  local function run(fn, ...) return S:wrap(fn)(...) end

  setup(function()
    S = synchro.new({ name = "aio-request-spec" })
    dir = run(function()
      return assert(require("synchro.aio").fs.mkdtemp("/tmp/synchro-req-"))
    end)
    local count = S:wrap(function()
      collectgarbage()
      collectgarbage()
      return require("spec.helpers.net").fd_count()
    end)
    fds = function()
      collectgarbage()
      collectgarbage()
      return count()
    end
    in_flight = S:wrap(function()
      return require("synchro.core").requests_pending()
    end)
    run(function(d)
      assert(require("synchro.aio").fs.writefile(d .. "/data", "0123456789"))
    end, dir)
  end)

  teardown(function()
    S:close()
    os.execute("rm -rf " .. dir)
  end)

  -- Waits (bounded) until no request is in flight beyond base.
  local function settled(base)
    return util.wait_for(function() return in_flight() == base end, 20)
  end

  it("never calls a cancelled request's function, whatever its kind",
    function()
      local base, before = in_flight(), fds()
      local r = run(function(d)
        local aio = require "synchro.aio"
        local core = require "synchro.core"
        local calls = 0
        local function cb() calls = calls + 1 end
        local reqs = {
          core.fs_stat(d .. "/data", cb),
          core.fs_open(d .. "/data", "r", nil, cb),
          core.fs_scandir(d, cb),
          core.fs_mkdtemp(d .. "/tXXXXXX", cb),
          core.getaddrinfo("localhost", "80", "any", "stream", cb),
          core.getnameinfo("127.0.0.1", 80, true, cb),
        }
        local started = #reqs
        for i = 1, #reqs do
          assert(getmetatable(reqs[i]) == core.request_mt)
          reqs[i]:cancel()
          reqs[i]:cancel() -- twice: nothing more
        end
        -- every completion (uv_cancel'ed or run to its end) comes back
        local deadline = aio.now() + 20
        while core.requests_pending() > 0 and aio.now() < deadline do
          aio.sleep(0.01)
        end
        return { calls = calls, started = started,
          left = core.requests_pending() }
      end, dir)
      assert.are.equal(6, r.started)
      assert.are.equal(0, r.calls)
      assert.are.equal(0, r.left)
      assert.is_true(settled(base))
      assert.are.equal(before, fds()) -- the abandoned open's fd is closed
      -- a mkdtemp that ran anyway left a directory: nothing else
      os.execute("rm -rf " .. dir .. "/t??????")
    end)

  it("raises the cancellation at once when cancelled right after submit",
    function()
      local base, before = in_flight(), fds()
      local r = run(function(d)
        local aio = require "synchro.aio"
        local ops = {
          function() return aio.fs.stat(d .. "/data") end,
          function() return aio.fs.open(d .. "/data") end,
          function() return aio.fs.readfile(d .. "/data") end,
          function() return aio.dns.getaddrinfo("localhost", 80) end,
          function() return aio.dns.getnameinfo("127.0.0.1", 80) end,
        }
        local out = {}
        for i = 1, #ops do
          -- t submits its request and this task cancels it in the same
          -- turn of the loop: no completion can come in between
          local pending0 = require("synchro.core").requests_pending()
          local submitted = aio.event()
          local t = aio.spawn(function()
            submitted:set()
            return ops[i]()
          end)
          submitted:wait()
          local inflight = require("synchro.core").requests_pending() > pending0
          local t0 = aio.now()
          t:cancel()
          local ok, err = pcall(t.join, t)
          out[i] = { ok = ok, cancelled = aio.is_cancelled(err),
            prompt = aio.now() - t0 < 5, inflight = inflight }
        end
        return out
      end, dir)
      for i = 1, #r do
        assert.is_false(r[i].ok, "op " .. i)
        assert.is_true(r[i].cancelled, "op " .. i)
        assert.is_true(r[i].prompt, "op " .. i)
        assert.is_true(r[i].inflight, "op " .. i) -- cancelled in flight
      end
      assert.is_true(settled(base))
      assert.are.equal(before, fds())
    end)

  it("a request in a task already cancelled is abandoned before it waits",
    function()
      local base = in_flight()
      local r = run(function(d)
        local aio = require "synchro.aio"
        local t = aio.spawn(function()
          pcall(aio.sleep, 10) -- cancelled here; swallowed
          return aio.fs.stat(d .. "/data") -- must raise again
        end)
        aio.sleep(0)
        t:cancel()
        local ok, err = pcall(t.join, t)
        return { ok = ok, cancelled = aio.is_cancelled(err) }
      end, dir)
      assert.is_false(r.ok)
      assert.is_true(r.cancelled)
      assert.is_true(settled(base))
    end)

  it("serves many concurrent requests cancelled at random", function()
    local base, before = in_flight(), fds()
    local r = run(function(d)
      local aio = require "synchro.aio"
      math.randomseed(12345)
      local n = 300
      local tasks, kinds = {}, {}
      local ops = {
        function() return aio.fs.stat(d .. "/data").size end,
        function()
          local f = assert(aio.fs.open(d .. "/data"))
          local s = f:read(4, 2)
          f:close()
          return s
        end,
        function() return #assert(aio.fs.scandir(d)) > 0 end,
        function()
          return assert(aio.dns.getaddrinfo("localhost", 80))[1] ~= nil
        end,
        function() return aio.fs.readfile(d .. "/data") end,
      }
      local want = { 10, "2345", true, true, "0123456789" }
      for i = 1, n do
        local k = math.random(#ops)
        kinds[i] = k
        tasks[i] = aio.spawn(ops[k])
      end
      -- cancel about half, at random moments while they run
      local cancelled = {}
      for _ = 1, math.floor(n / 2) do
        local i = math.random(n)
        if math.random(3) == 1 then aio.sleep(0) end
        if not tasks[i]:done() then
          tasks[i]:cancel()
          cancelled[i] = true
        end
      end
      local wrong, ok_count, cancel_count = {}, 0, 0
      for i = 1, n do
        local ok, v = pcall(tasks[i].join, tasks[i])
        if ok then
          ok_count = ok_count + 1
          if v ~= want[kinds[i]] then wrong[#wrong + 1] = i end
        elseif aio.is_cancelled(v) and cancelled[i] then
          cancel_count = cancel_count + 1
        else
          wrong[#wrong + 1] = tostring(v)
        end
      end
      return { wrong = wrong, ok = ok_count, cancelled = cancel_count, n = n }
    end, dir)
    assert.are.same({}, r.wrong)
    assert.are.equal(r.n, r.ok + r.cancelled)
    assert.is_true(r.cancelled > 0)
    assert.is_true(r.ok > 0)
    assert.is_true(settled(base))
    assert.are.equal(before, fds())
  end)

  it("writes done at once succeed in a cancelled task; waits raise",
    function()
      local r = run(function()
        local aio = require "synchro.aio"
        local got
        local server = assert(aio.tcp.listen("127.0.0.1", 0, function(c)
          got = c:read_all()
        end))
        local t = aio.spawn(function()
          local conn = assert(aio.tcp.connect("127.0.0.1", server:port()))
          local ok = pcall(aio.sleep, 10) -- cancelled here
          -- cleanup without a shield: a small write needs no wait
          local w = { conn:write("bye") }
          conn:close()
          return ok, w
        end)
        aio.sleep(0.05)
        t:cancel()
        local ok, sleep_ok, w = pcall(t.join, t)
        local deadline = aio.now() + 10
        while got == nil and aio.now() < deadline do aio.sleep(0.01) end
        server:close()
        return { ok = ok, sleep_ok = sleep_ok, w = w, got = got }
      end)
      assert.is_true(r.ok)
      assert.is_false(r.sleep_ok)
      assert.are.same({ true }, r.w)
      assert.are.equal("bye", r.got)
    end)

  it("a cancelled queued write is still written, in order, and its task " ..
    "raises at once", function()
      local r = run(function()
        local aio = require "synchro.aio"
        local ready = aio.event()
        local server_conn
        local server = assert(aio.tcp.listen("127.0.0.1", 0, function(c)
          server_conn = c
          ready:set()
          aio.sleep(math.huge)
        end))
        local conn = assert(aio.tcp.connect("127.0.0.1", server:port()))
        ready:wait()
        local big = ("x"):rep(32 * 1024 * 1024) -- more than the kernel takes
        local t = aio.spawn(function() return conn:write(big) end)
        aio.sleep(0.05)
        local t0 = aio.now()
        t:cancel()
        local ok, err = pcall(t.join, t)
        local prompt = aio.now() - t0 < 5
        local reader = aio.spawn(function()
          return server_conn:read_exactly(#big + 3)
        end)
        assert(conn:write("END"))
        local data = assert(reader:join())
        conn:close()
        server:close()
        return { ok = ok, cancelled = aio.is_cancelled(err), prompt = prompt,
          intact = data == big .. "END" }
      end)
      assert.is_false(r.ok)
      assert.is_true(r.cancelled)
      assert.is_true(r.prompt)
      assert.is_true(r.intact)
    end)

  it("closes with hundreds of fs and dns requests in flight #subprocess",
    function()
      local h = util.spawn_lua(util.child_prelude() .. ([[
        local synchro = require "synchro"
        for round = 1, 3 do
          local S = synchro.new({ name = "req-close-" .. round })
          local fut = S:wrap(function(d)
            local aio = require "synchro.aio"
            for i = 1, 400 do
              aio.spawn(function()
                while true do
                  if i %% 2 == 0 then aio.fs.stat(d .. "/data")
                  else aio.dns.getaddrinfo("localhost", 80) end
                  aio.fs.readfile(d .. "/data")
                end
              end)
            end
            aio.sleep(math.huge)
          end).future(%q)
          fut:wait(0.2)
          S:close()
          assert(fut:done())
        end
        print("closed")
      ]]):format(dir))
      local code = util.wait_exit(h, 120)
      local out, err = util.read(h.out) or "", util.read(h.err) or ""
      local stacks = code == nil and util.stacks(h) or ""
      util.cleanup(h)
      assert.are.equal(0, code, err .. stacks)
      assert.are.equal("closed\n", out)
    end)

  it("exits (os.exit) with hundreds of requests in flight #subprocess",
    function()
      local h = util.spawn_lua(util.child_prelude() .. ([[
        local S = require("synchro").new()
        local fut = S:wrap(function(d)
          local aio = require "synchro.aio"
          for _ = 1, 300 do
            aio.spawn(function()
              while true do
                aio.fs.stat(d .. "/data")
                aio.dns.getaddrinfo("localhost", 80)
              end
            end)
          end
          aio.sleep(math.huge)
        end).future(%q)
        fut:wait(0.2)
        os.exit(7)
      ]]):format(dir))
      local code = util.wait_exit(h, 120)
      local err = util.read(h.err) or ""
      local stacks = code == nil and util.stacks(h) or ""
      util.cleanup(h)
      assert.are.equal(7, code, err .. stacks)
      assert.are.equal("", err)
    end)

  it("frees a request that completes after its VM closed #subprocess",
    function()
      local fifo = dir .. "/fifo"
      os.execute("mkfifo " .. fifo)
      local S2 = synchro.new({ name = "req-late" })
      local fut = S2:wrap(function(path)
        local aio = require "synchro.aio"
        local f = assert(aio.fs.open(path, "r+"))
        for _ = 1, 3 do aio.spawn(function() return f:read(1) end) end
        return f:read(1)
      end).future(fifo)
      assert.is_false(fut:wait(0.1))
      -- the reads end only once this writer runs, after the VM closed
      os.execute(("(sleep 0.5; timeout 5 sh -c 'exec 3<>%s; " ..
        "printf xxxx >&3') >/dev/null 2>&1 &"):format(fifo))
      S2:close()
      assert.has_error(function() fut:result() end)
      os.remove(fifo)
    end)
end)
