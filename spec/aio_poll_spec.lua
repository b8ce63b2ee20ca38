-- synchro.aio.poll on real file descriptors that libuv does not own: the
-- two ends of a FIFO opened non-blocking, so readiness comes from the
-- kernel and back pressure is real (a full FIFO is not writable).
local synchro = require "synchro"
local util = require "spec.helpers.util"

local function has(s, part) return type(s) == "string" and
  s:find(part, 1, true) ~= nil end

describe("synchro.aio.poll", function()
  local S, dir
  setup(function()
    S = synchro.new({ name = "poll-spec" })
    dir = util.tmpname()
    assert(os.execute("mkdir -p " .. dir))
  end)
  teardown(function()
    S:close()
    os.execute("rm -rf " .. dir)
  end)

  local n = 0
  -- A fresh FIFO; the function runs on the loop with its two ends (fds).
  local function with_fifo(fn)
    n = n + 1
    local path = dir .. "/fifo" .. n
    assert(os.execute("mkfifo " .. path))
    local body = fn -- an upvalue: its code is copied to the loop VM
    return S:wrap(function(p)
      local aio = require "synchro.aio"
      local poll = require "synchro.aio.poll"
      local c = aio.fs.constants
      local r = assert(aio.fs.open(p, c.O_RDONLY + c.O_NONBLOCK))
      local w = assert(aio.fs.open(p, c.O_WRONLY + c.O_NONBLOCK))
      local handles = require("synchro.core").loop_handles()
      local ok, res = pcall(body, r, w, aio)
      r:close()
      w:close()
      res = ok and res or { err = tostring(res) }
      res.watched, res.leaked = poll.watched(),
        require("synchro.core").loop_handles() - handles
      return res
    end)(path)
  end

  it("waits until a FIFO is readable, and says what is ready", function()
    local res = with_fifo(function(r, w, aio)
      local t0 = aio.now()
      local writer = aio.spawn(function()
        aio.sleep(0.05)
        return aio.fs.write(w:fileno(), "ping")
      end)
      local ready = aio.poll(r:fileno(), "r", 10)
      local waited = aio.now() - t0
      writer:join()
      return { ready = ready, waited = waited,
        data = aio.fs.read(r:fileno(), 10),
        again = { aio.poll(r:fileno(), "r", 0.05) },
        writable = aio.poll(w:fileno(), "rw", 1) }
    end)
    assert.is_nil(res.err)
    assert.are.equal("r", res.ready)
    assert.is_true(res.waited >= 0.04)
    assert.are.equal("ping", res.data)
    -- all read: not readable any more
    assert.are.same({ nil, res.again[2], "ETIMEDOUT" }, res.again)
    assert.is_true(has(res.again[2], "ETIMEDOUT: fd"))
    -- the write end of a FIFO with room is writable, never readable
    assert.are.equal("w", res.writable)
    assert.are.equal(0, res.watched)
    assert.are.equal(0, res.leaked)
  end)

  it("is level triggered: unread data stays ready", function()
    local res = with_fifo(function(r, w, aio)
      assert(aio.fs.write(w:fileno(), "x"))
      return { aio.poll(r:fileno(), "r"), aio.poll(r:fileno(), "r", 1) }
    end)
    assert.are.same({ "r", "r", watched = 0, leaked = 0 }, res)
  end)

  it("waits for room in a full FIFO (back pressure)", function()
    local res = with_fifo(function(r, w, aio)
      local wfd = w:fileno()
      local chunk = ("x"):rep(4096)
      local filled = 0
      while true do -- fill until the kernel says EAGAIN
        local m, _, code = aio.fs.write(wfd, chunk)
        if not m then
          assert(code == "EAGAIN", code)
          break
        end
        filled = filled + m
      end
      local full = { aio.poll(wfd, "w", 0.05) }
      local reader = aio.spawn(function()
        aio.sleep(0.05)
        local got = 0
        while got < filled do
          assert(aio.poll(r:fileno(), "r", 5))
          got = got + #assert(aio.fs.read(r:fileno(), 65536))
        end
        return got
      end)
      local ready = aio.poll(wfd, "w", 10)
      return { filled = filled, full = full, ready = ready,
        drained = reader:join() }
    end)
    assert.is_nil(res.err)
    assert.is_true(res.filled >= 4096)
    assert.are.equal("ETIMEDOUT", res.full[3])
    assert.are.equal("w", res.ready)
    assert.are.equal(res.filled, res.drained)
    assert.are.equal(0, res.leaked)
  end)

  it("lets two tasks wait on one fd (one libuv handle)", function()
    local res = with_fifo(function(r, w, aio)
      local rfd = r:fileno()
      local a = aio.spawn(aio.poll, rfd, "r", 10)
      local b = aio.spawn(aio.poll, rfd, "r", 10)
      local c = aio.spawn(aio.poll, w:fileno(), "w", 10)
      aio.sleep(0.02)
      local during = require("synchro.aio.poll").watched()
      assert(aio.fs.write(w:fileno(), "go"))
      return { a = a:join(), b = b:join(), c = c:join(), during = during }
    end)
    assert.is_nil(res.err)
    assert.are.equal("r", res.a)
    assert.are.equal("r", res.b)
    assert.are.equal("w", res.c)
    assert.is_true(res.during >= 1 and res.during <= 2)
    assert.are.equal(0, res.watched)
    assert.are.equal(0, res.leaked)
  end)

  it("stops waiting at once when cancelled, and frees the handle", function()
    local res = with_fifo(function(r, _, aio)
      local t = aio.spawn(aio.poll, r:fileno(), "r")
      aio.sleep(0.02)
      local t0 = aio.now()
      t:cancel()
      local ok, err = pcall(t.join, t)
      return { ok = ok, cancelled = aio.is_cancelled(err),
        took = aio.now() - t0,
        timed = { aio.timeout(0.05, aio.poll, r:fileno(), "r") } }
    end)
    assert.is_nil(res.err)
    assert.is_false(res.ok)
    assert.is_true(res.cancelled)
    assert.is_true(res.took < 1)
    assert.are.equal("ETIMEDOUT", res.timed[3])
    assert.are.equal(0, res.watched)
    assert.are.equal(0, res.leaked)
  end)

  it("is cancelled by a future's cancel from the calling thread", function()
    n = n + 1
    local path = dir .. "/fifo" .. n
    assert(os.execute("mkfifo " .. path))
    local f = S:wrap(function(p)
      local aio = require "synchro.aio"
      local c = aio.fs.constants
      local r = assert(aio.fs.open(p, c.O_RDONLY + c.O_NONBLOCK))
      local _, err = pcall(aio.poll, r:fileno(), "r")
      r:close()
      error(err, 0)
    end)
    local fut = f.future(path)
    util.sleep(0.1)
    local t0 = util.now()
    fut:cancel()
    local ok, err = pcall(fut.result, fut, 10)
    assert.is_false(ok)
    assert.is_true(synchro.is_cancelled(err) or has(tostring(err),
      "ECANCELED"))
    assert.is_true(util.now() - t0 < 5)
    assert.are.equal(0, S:wrap(function()
      return require("synchro.aio.poll").watched()
    end)())
  end)

  it("returns nil, msg, code for fds it cannot watch", function()
    local res = S:wrap(function(file)
      local aio = require "synchro.aio"
      local f = assert(aio.fs.open(file, "w"))
      local regular = { aio.poll(f:fileno(), "r", 1) }
      f:close()
      local server = assert(aio.tcp.listen("127.0.0.1", 0, function() end))
      server:close()
      return { regular = regular,
        bad = { aio.poll(987654, "r", 1) } }
    end)(dir .. "/regular")
    assert.are.equal("EPERM", res.regular[3])
    assert.is_true(has(res.regular[2], "EPERM: "))
    assert.is_nil(res.bad[1])
    assert.are.equal("EBADF", res.bad[3])
  end)

  it("raises on misuse, naming the argument", function()
    local errs = S:wrap(function()
      local aio = require "synchro.aio"
      local out = {}
      for i, args in ipairs({ { "x", "r" }, { -1, "r" }, { 0.5, "r" },
          { 0, "rx" }, { 0, nil }, { 0, "r", "soon" }, { 0, "r", 0 / 0 } }) do
        local ok, err = pcall(aio.poll, args[1], args[2], args[3])
        out[i] = not ok and err or "no error"
      end
      return out
    end)()
    assert.is_true(has(errs[1], "bad argument #1 to 'poll' (integer fd"))
    assert.is_true(has(errs[2], "bad argument #1 to 'poll' (fd out of range"))
    assert.is_true(has(errs[3], "bad argument #1 to 'poll'"))
    assert.is_true(has(errs[4], "bad argument #2 to 'poll' (events must"))
    assert.is_true(has(errs[5], "bad argument #2 to 'poll'"))
    assert.is_true(has(errs[6], "bad argument #3 to 'poll' (number"))
    assert.is_true(has(errs[7], "bad argument #3 to 'poll' (timeout is NaN"))
  end)

  it("must be called from async code", function()
    local aio = require "synchro.aio"
    local ok, err = pcall(aio.poll, 0, "r")
    assert.is_false(ok)
    assert.is_true(has(err, "async code"))
  end)
end)
