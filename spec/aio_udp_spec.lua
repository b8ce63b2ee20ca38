-- synchro.aio.udp on real loopback sockets.
local synchro = require "synchro"

local function has(s, part) return type(s) == "string" and
  s:find(part, 1, true) ~= nil end

describe("synchro.aio.udp", function()
  local S
  setup(function() S = synchro.new({ name = "udp-spec" }) end)
  teardown(function() S:close() end)

  local function run(fn, ...) return S:wrap(fn)(...) end

  it("sends and receives datagrams with the sender's address", function()
    local r = run(function()
      local aio = require "synchro.aio"
      local net = require "spec.helpers.net"
      local before = net.snapshot()
      local a = assert(aio.udp.bind("127.0.0.1", 0))
      local b = assert(aio.udp.bind("127.0.0.1", 0))
      local a_addr, a_port = a:sockname()
      local b_addr, b_port = b:sockname()
      local r = { a_addr = a_addr, b_addr = b_addr }
      r.sent = a:send("ping", b_addr, b_port)
      r.got = { b:recv() }
      b:send("pong", "localhost", a_port) -- by name
      r.back = { a:recv() }
      r.a_port = a_port
      a:close()
      b:close()
      r.before, r.after = before, net.settle(before)
      return r
    end)
    assert.are.equal("127.0.0.1", r.a_addr)
    assert.is_true(r.sent)
    assert.are.same({ "ping", "127.0.0.1", r.a_port }, r.got)
    assert.are.equal("pong", r.back[1])
    assert.are.same(r.before, r.after)
  end)

  it("keeps datagrams that arrive while nobody waits, in order; empty " ..
     "and large ones too", function()
    local r = run(function()
      local aio = require "synchro.aio"
      local a = assert(aio.udp.bind("127.0.0.1", 0))
      local b = assert(aio.udp.bind("127.0.0.1", 0))
      local _, port = b:sockname()
      local big = string.rep("z", 60000)
      for i = 1, 5 do assert(a:send("n" .. i, "127.0.0.1", port)) end
      assert(a:send("", "127.0.0.1", port))
      assert(a:send(big, "127.0.0.1", port))
      aio.sleep(0.05)
      local r = {}
      for i = 1, 6 do r[i] = (b:recv()) end
      r.big = (b:recv()) == big
      a:close()
      b:close()
      return r
    end)
    assert.are.same({ "n1", "n2", "n3", "n4", "n5", "", big = true }, r)
  end)

  it("speaks IPv6 on ::1", function()
    local got = run(function()
      local aio = require "synchro.aio"
      local a, msg = aio.udp.bind("::1", 0)
      if not a then return "no IPv6: " .. msg end
      local b = assert(aio.udp.bind("::1", 0))
      local _, port = b:sockname()
      a:send("six", "::1", port)
      local data, addr = b:recv()
      a:close()
      b:close()
      return data .. " from " .. addr
    end)
    assert.are.equal("six from ::1", got)
  end)

  it("cancels a waiting recv; a later datagram is still received",
     function()
    local r = run(function()
      local aio = require "synchro.aio"
      local net = require "spec.helpers.net"
      local a = assert(aio.udp.bind("127.0.0.1", 0))
      local b = assert(aio.udp.bind("127.0.0.1", 0))
      local _, port = b:sockname()
      local before = net.snapshot()
      local receiver = aio.spawn(function() return b:recv() end)
      aio.sleep(0.05)
      local t0 = aio.now()
      receiver:cancel()
      local ok, err = pcall(receiver.join, receiver)
      local r = { ok = ok, cancelled = aio.is_cancelled(err),
        elapsed = aio.now() - t0 }
      a:send("after", "127.0.0.1", port)
      r.got = b:recv()
      r.before, r.mid = before, net.count() -- no GC: closed at once
      a:close()
      b:close()
      return r
    end)
    assert.is_false(r.ok)
    assert.is_true(r.cancelled)
    assert.is_true(r.elapsed < 0.5, r.elapsed)
    assert.are.equal("after", r.got)
    assert.are.same(r.before, r.mid)
  end)

  it("wakes a receiver with ECANCELED on close; then raises on use",
     function()
    local r = run(function()
      local aio = require "synchro.aio"
      local b = assert(aio.udp.bind("127.0.0.1", 0))
      local receiver = aio.spawn(function() return { b:recv() } end)
      aio.sleep(0.02)
      b:close()
      b:close()
      local r = { woke = receiver:join() }
      r.ok, r.err = pcall(b.recv, b)
      r.sok, r.serr = pcall(b.send, b, "x", "127.0.0.1", 9)
      return r
    end)
    assert.are.same({ nil, "ECANCELED: operation canceled", "ECANCELED" },
      r.woke)
    assert.is_false(r.ok)
    assert.is_true(has(r.err, "bad argument #1 to 'recv' (socket is closed)"),
      r.err)
    assert.is_false(r.sok)
    assert.is_true(has(r.serr,
      "bad argument #1 to 'send' (socket is closed)"), r.serr)
  end)

  it("returns I/O errors and raises on misuse", function()
    local r = run(function()
      local aio = require "synchro.aio"
      local function err(fn, ...)
        local ok, e = pcall(fn, ...)
        return ok and "no error" or tostring(e)
      end
      local a = assert(aio.udp.bind("127.0.0.1", 0))
      local _, port = a:sockname()
      local r = {
        taken = { aio.udp.bind("127.0.0.1", port) },
        err(aio.udp.bind, 1, 0),
        err(aio.udp.bind, "127.0.0.1", -1),
        err(a.send, a, nil, "127.0.0.1", 1),
        err(a.send, a, "x", "127.0.0.1", 65536),
        err(a.recv, {}),
      }
      a:close()
      return r
    end)
    assert.are.same({ nil, "EADDRINUSE: address already in use",
      "EADDRINUSE" }, r.taken)
    local want = {
      "bad argument #1 to 'bind' (string expected, got number)",
      "bad argument #2 to 'bind' (port out of range)",
      "bad argument #1 to 'send' (string expected, got nil)",
      "bad argument #3 to 'send' (port out of range)",
      "bad argument #1 to 'recv' (socket expected, got table)",
    }
    for i = 1, #want do
      assert.is_true(has(r[i], want[i]), ("%q in %q"):format(want[i], r[i]))
    end
  end)

  it("closes a dropped socket on garbage collection", function()
    local r = run(function()
      local aio = require "synchro.aio"
      local net = require "spec.helpers.net"
      local before = net.snapshot()
      local function drop() assert(aio.udp.bind("127.0.0.1", 0)) end
      drop()
      local r = { opened = net.count() }
      r.before, r.after = before, net.settle(before)
      return r
    end)
    assert.are.equal(r.before.handles + 1, r.opened.handles)
    assert.are.same(r.before, r.after)
  end)
end)
