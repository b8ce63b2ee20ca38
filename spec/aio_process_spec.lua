-- synchro.aio.process: real child processes, pipes, exit codes, signals,
-- cancellation, and no leaked handles, descriptors or zombies.
local synchro = require "synchro"
local util = require "spec.helpers.util"

-- Open descriptors of this process, leaving out the listing's own pipe
-- (popen's parent may not have closed the child's end of it yet).
local function fd_count()
  local p = io.popen(("sh -c 'own=$(readlink /proc/$$/fd/1); " ..
    "ls -l /proc/%s/fd | grep -c -v -F \"$own\"'"):format(util.pid()))
  local n = tonumber(p:read("*a"))
  p:close()
  return n
end

-- Whether pid still exists (a zombie counts: it is not reaped).
local function alive(pid)
  return util.read("/proc/" .. pid .. "/stat") ~= nil
end

describe("synchro.aio.process", function()
  local S
  setup(function() S = synchro.new({ name = "process-spec" }) end)
  teardown(function() S:close() end)

  local function run(fn, ...) return S:wrap(fn)(...) end

  -- Runs fn (copied, as by wrap) in the loop; returns the open handle
  -- count before and after, and its results in a table (the handles of a
  -- finished child close on the next loop turns: they get up to a
  -- second).
  local function counting(fn)
    return S:wrap(function()
      local aio = require "synchro.aio"
      local core = require "synchro.core"
      local before = core.loop_handles()
      local r = { fn() }
      local after
      for _ = 1, 100 do
        after = core.loop_handles()
        if after == before then break end
        aio.sleep(0.01)
      end
      return before, after, r
    end)()
  end

  it("echoes through cat's stdin and stdout", function()
    local line1, line2, rest, code, signal = run(function()
      local process = require("synchro.aio").process
      local p = assert(process.spawn("cat", {},
        { stdin = "pipe", stdout = "pipe" }))
      assert(p.stdin:write("hello\nworld\n"))
      assert(p.stdin:write("tail"))
      p.stdin:close()
      local a = p.stdout:read_line()
      local b = p.stdout:read_line()
      local c = p.stdout:read_all()
      local code, signal = p:wait()
      p:close()
      return a, b, c, code, signal
    end)
    assert.are.equal("hello", line1)
    assert.are.equal("world", line2)
    assert.are.equal("tail", rest)
    assert.are.equal(0, code)
    assert.is_nil(signal)
  end)

  it("reads lines, partial lines and the end", function()
    local r = run(function()
      local process = require("synchro.aio").process
      local p = assert(process.spawn("printf", { "a\\n\\nbb\\nlast" },
        { stdout = "pipe" }))
      local out = {}
      for _ = 1, 6 do out[#out + 1] = tostring(p.stdout:read_line()) end
      p:wait()
      return out
    end)
    assert.are.same({ "a", "", "bb", "last", "nil", "nil" }, r)
  end)

  it("finds lines across chunks that arrive while lines are left", function()
    local r = run(function()
      local aio = require "synchro.aio"
      local p = assert(aio.process.spawn("sh", { "-c",
        "printf 'a\\nb\\n'; sleep 0.1; printf 'c\\nd'; sleep 0.1; " ..
        "printf 'e\\n'" }, { stdout = "pipe" }))
      local out = { p.stdout:read_line() }
      aio.sleep(0.3) -- the rest arrives behind the unread "b\n"
      for _ = 1, 4 do out[#out + 1] = tostring(p.stdout:read_line()) end
      p:wait()
      return out
    end)
    assert.are.same({ "a", "b", "c", "de", "nil" }, r)
  end)

  it("reads at most n bytes with read(n), nil at the end", function()
    local a, b, c = run(function()
      local process = require("synchro.aio").process
      local p = assert(process.spawn("printf", { "abc" }, { stdout = "pipe" }))
      p:wait()
      local x = p.stdout:read(2)
      local y = p.stdout:read(5)
      local z = p.stdout:read()
      return x, y, z
    end)
    assert.are.equal("ab", a)
    assert.are.equal("c", b)
    assert.is_nil(c)
  end)

  it("reports the exit code of sh -c 'exit 3'", function()
    local code, signal = run(function()
      local p = assert(require("synchro.aio").process.spawn("sh",
        { "-c", "exit 3" }))
      return p:wait()
    end)
    assert.are.equal(3, code)
    assert.is_nil(signal)
  end)

  it("kills a sleep 10 promptly (SIGTERM: 143, signal 15)", function()
    local code, signal, secs, again = run(function()
      local aio = require "synchro.aio"
      local p = assert(aio.process.spawn("sleep", { "10" }))
      local t0 = aio.now()
      assert(p:kill())
      local code, signal = p:wait()
      return code, signal, aio.now() - t0, { p:kill() }
    end)
    assert.are.equal(143, code)
    assert.are.equal(15, signal)
    assert.is_true(secs < 5, "took " .. secs)
    assert.are.same({ nil, "ESRCH: no such process", "ESRCH" }, again)
  end)

  it("takes signal names and numbers", function()
    local r = run(function()
      local process = require("synchro.aio").process
      local out = {}
      for _, sig in ipairs({ "SIGKILL", "KILL", 9, "int", "SIGUSR1" }) do
        local p = assert(process.spawn("sleep", { "10" }))
        assert(p:kill(sig))
        local _, signal = p:wait()
        out[#out + 1] = signal
      end
      local p = assert(process.spawn("sleep", { "10" }))
      local ok, err = pcall(p.kill, p, "SIGNOPE")
      p:close()
      out[#out + 1] = ok
      out[#out + 1] = err:match("bad argument.*")
      return out
    end)
    assert.are.same({ 9, 9, 9, 2, 10, false,
      "bad argument #1 to 'kill' (unknown signal SIGNOPE)" }, r)
  end)

  it("lets several tasks wait for one child", function()
    local a, b = run(function()
      local aio = require "synchro.aio"
      local p = assert(aio.process.spawn("sh", { "-c", "sleep 0.1; exit 5" }))
      return aio.gather(function() return p:wait() end,
        function() return p:wait() end)
    end)
    assert.are.equal(5, a)
    assert.are.equal(5, b)
  end)

  it("replaces the environment with env", function()
    local out = run(function()
      local process = require("synchro.aio").process
      return process.run("sh", { "-c", 'echo "$FOO ${HOME-unset} $N"' },
        { env = { FOO = "bar baz", N = 42 } })
    end)
    assert.are.equal("bar baz unset 42\n", out)
  end)

  it("starts in cwd", function()
    local dir = util.tmpname()
    os.execute("mkdir -p " .. dir)
    local p = io.popen("cd " .. dir .. " && pwd -P")
    local want = p:read("*l")
    p:close()
    local out, code = run(function(d)
      local process = require("synchro.aio").process
      local o, _, c = process.run("sh", { "-c", "pwd -P" }, { cwd = d })
      return o, c
    end, dir)
    os.execute("rm -rf " .. dir)
    assert.are.equal(0, code)
    assert.are.equal(want .. "\n", out)
  end)

  it("returns nil, ENOENT for a missing command, leaking nothing", function()
    local fds = fd_count()
    local before, after, r = counting(function()
      local process = require("synchro.aio").process
      local a = { process.spawn("synchro-no-such-command", {},
        { stdin = "pipe", stdout = "pipe", stderr = "pipe" }) }
      local b = { process.run("synchro-no-such-command") }
      return a, b
    end)
    assert.are.same({ nil, "ENOENT: no such file or directory", "ENOENT" },
      r[1])
    assert.are.same({ nil, "ENOENT: no such file or directory", "ENOENT" },
      r[2])
    assert.are.equal(before, after)
    assert.are.equal(fds, fd_count())
  end)

  it("captures stderr apart from stdout", function()
    local out, err, code, a, b = run(function()
      local process = require("synchro.aio").process
      local o, e, c = process.run("sh",
        { "-c", "echo to-out; echo to-err >&2; exit 2" })
      local p = assert(process.spawn("sh", { "-c", "echo oops >&2" },
        { stderr = "pipe", stdout = "ignore" }))
      local x = p.stderr:read_all()
      p:wait()
      return o, e, c, x, p.stdout
    end)
    assert.are.equal("to-out\n", out)
    assert.are.equal("to-err\n", err)
    assert.are.equal(2, code)
    assert.are.equal("oops\n", a)
    assert.is_nil(b)
  end)

  it("moves several MiB through pipes both ways without deadlock", function()
    local n, zeros, errs, code, echoed = run(function()
      local process = require("synchro.aio").process
      local mib = 1024 * 1024
      -- 4 MiB on stdout, then 4 MiB on stderr: reading one pipe to its
      -- end before the other would deadlock
      local o, e, c = process.run("sh", { "-c",
        "head -c 4194304 /dev/zero; head -c 4194304 /dev/zero >&2" })
      -- cat echoes 3 MiB as it reads them: writing all before reading
      -- would deadlock
      local input = ("0123456789abcdef"):rep(3 * mib / 16)
      local echo = process.run("cat", {}, { stdin = input })
      return #o, o == ("\0"):rep(4 * mib), #e, c, echo == input
    end)
    assert.are.equal(4 * 1024 * 1024, n)
    assert.is_true(zeros)
    assert.are.equal(4 * 1024 * 1024, errs)
    assert.are.equal(0, code)
    assert.is_true(echoed)
  end)

  it("feeds stdin from a string in run()", function()
    local out, empty = run(function()
      local process = require("synchro.aio").process
      return process.run("cat", nil, { stdin = "abc" }),
        process.run("cat", nil, { stdin = "" })
    end)
    assert.are.equal("abc", out)
    assert.are.equal("", empty)
  end)

  it("returns EPIPE when writing to a child that is gone", function()
    local r = run(function()
      local process = require("synchro.aio").process
      local p = assert(process.spawn("true", {}, { stdin = "pipe" }))
      p:wait()
      local res = { p.stdin:write(("x"):rep(1024 * 1024)) }
      p:close()
      return res
    end)
    assert.are.same({ nil, "EPIPE: broken pipe", "EPIPE" }, r)
  end)

  it("stops a cancelled wait promptly; no handle, fd or zombie left",
    function()
      local fds = fd_count()
      local before, after, r = counting(function()
        local aio = require "synchro.aio"
        local p = assert(aio.process.spawn("sleep", { "10" },
          { stdout = "pipe" }))
        local t0 = aio.now()
        local a, b, c = aio.timeout(0.1, p.wait, p)
        local secs = aio.now() - t0
        local still = p:kill(0) -- signal 0: is it still there?
        p:close()                 -- SIGKILL
        local code, signal = p:wait()
        return a, b, c, secs, still, code, signal, p.pid
      end)
      local a, _, c, secs, still, code, signal, pid = (table.unpack or
        unpack)(r, 1, 8)
      assert.is_nil(a)
      assert.are.equal("ETIMEDOUT", c)
      assert.is_true(secs < 5, "took " .. secs)
      assert.is_true(still)
      assert.are.equal(137, code)
      assert.are.equal(9, signal)
      assert.are.equal(before, after)
      assert.are.equal(fds, fd_count())
      assert.is_false(alive(pid), "pid " .. pid .. " is a zombie")
    end)

  it("stops a cancelled read promptly; the data stays buffered", function()
    local fds = fd_count()
    local before, after, r = counting(function()
      local aio = require "synchro.aio"
      local p = assert(aio.process.spawn("sh",
        { "-c", "sleep 0.3; echo late" }, { stdout = "pipe" }))
      local t0 = aio.now()
      local a, _, c = aio.timeout(0.05, p.stdout.read, p.stdout)
      local secs = aio.now() - t0
      local line = p.stdout:read_line()
      local code = p:wait()
      p:close()
      return a, c, secs, line, code
    end)
    assert.is_nil(r[1])
    assert.are.equal("ETIMEDOUT", r[2])
    assert.is_true(r[3] < 5, "took " .. r[3])
    assert.are.equal("late", r[4])
    assert.are.equal(0, r[5])
    assert.are.equal(before, after)
    assert.are.equal(fds, fd_count())
  end)

  it("kills the child of a cancelled run()", function()
    local before, after, r = counting(function()
      local aio = require "synchro.aio"
      local pidfile = os.tmpname()
      local a, _, c = aio.timeout(0.2, aio.process.run, "sh",
        { "-c", "echo $$ > " .. pidfile .. "; exec sleep 10" })
      aio.sleep(0.05)
      local f = io.open(pidfile)
      local pid = f and f:read("*l")
      if f then f:close() end
      os.remove(pidfile)
      return a, c, pid
    end)
    assert.is_nil(r[1])
    assert.are.equal("ETIMEDOUT", r[2])
    assert.is_truthy(r[3])
    assert.are.equal(before, after)
    assert.is_true(util.wait_for(function() return not alive(r[3]) end, 5))
  end)

  it("reaps the children it leaves running when the loop closes", function()
    local S2 = synchro.new({ name = "process-close" })
    local pid = S2:wrap(function()
      local p = assert(require("synchro.aio").process.spawn("sleep", { "10" }))
      return p.pid
    end)()
    assert.is_true(alive(pid))
    S2:close()
    assert.is_false(alive(pid), "pid " .. pid .. " left behind")
  end)

  it("sees children exit while the main thread blocks in a call", function()
    -- The loop thread blocks SIGCHLD; a Lua script's main thread does not,
    -- and gets it even while parked in a blocking call.
    local h = util.spawn_lua(("package.path = %q\npackage.cpath = %q\n")
      :format(package.path, package.cpath) .. [[
      local synchro = require "synchro"
      local S = synchro.new()
      local f = S:wrap(function()
        local process = require("synchro.aio").process
        local codes = {}
        for i = 1, 5 do
          local p = assert(process.spawn("sh", { "-c", "exit " .. i }))
          codes[i] = p:wait()
        end
        return table.concat(codes, ",")
      end)
      print(f())
      S:close()
    ]])
    local code = util.wait_exit(h, 20)
    local out, err = util.read(h.out), util.read(h.err)
    util.cleanup(h)
    assert.are.equal(0, code, err)
    assert.are.equal("1,2,3,4,5\n", out)
  end)

  it("sees a child exit while every thread blocks SIGCHLD", function()
    -- os.execute (system()) blocks SIGCHLD in the main thread while it
    -- waits, and the loop thread always does: the poll fallback reaps the
    -- child before os.execute returns.
    local core = require "synchro.core"
    local f = S:wrap(function()
      local aio = require "synchro.aio"
      local p = assert(aio.process.spawn("sh", { "-c", "exit 4" }))
      local code = p:wait()
      return code, aio.now()
    end)
    local fut = f.future()
    os.execute("sleep 3")
    local returned = core.now()
    local code, seen = fut:result()
    assert.are.equal(4, code)
    assert.is_true(seen < returned - 0.5,
      ("seen %.2f s before os.execute returned"):format(returned - seen))
  end)

  it("raises on misuse", function()
    local r = run(function()
      local process = require("synchro.aio").process
      local out = {}
      local function try(...)
        local ok, err = pcall(...)
        out[#out + 1] = not ok and tostring(err):match("bad argument.*")
      end
      try(process.spawn)
      try(process.spawn, "true", "x")
      try(process.spawn, "true", { {} })
      try(process.spawn, "true", {}, { bogus = 1 })
      try(process.spawn, "true", {}, { stdout = "file" })
      try(process.spawn, "true", {}, { env = { A = {} } })
      try(process.run, "true", {}, { stdin = 42 })
      local p = assert(process.spawn("cat", {},
        { stdin = "pipe", stdout = "pipe" }))
      try(p.stdin.read, p.stdin)
      try(p.stdout.write, p.stdout, "x")
      p.stdin:close()
      try(p.stdin.write, p.stdin, "x")
      p:close()
      return out
    end)
    assert.are.same({
      "bad argument #1 to 'spawn' (string expected, got nil)",
      "bad argument #2 to 'spawn' (table expected, got string)",
      "bad argument #2 to 'spawn' (args[1]: string expected, got table)",
      "bad argument #3 to 'spawn' (unknown option 'bogus')",
      'bad argument #3 to \'spawn\' (stdout: "pipe", "inherit" or ' ..
        '"ignore" expected, got file)',
      "bad argument #3 to 'spawn' (env.A: string expected, got table)",
      "bad argument #3 to 'run' (stdin: string or function expected, got number)",
      "bad argument #1 to 'read' (stream is not readable)",
      "bad argument #1 to 'write' (stream is not writable)",
      "bad argument #1 to 'write' (stream is closed)",
    }, r)
  end)

  it("is only for async code on a loop", function()
    local ok, err = pcall(function()
      return synchro.run(function()
        return require("synchro.aio").process.spawn("true")
      end)
    end)
    assert.is_false(ok)
    assert.matches("only in async code on a synchronizer's loop", err)
  end)
end)
