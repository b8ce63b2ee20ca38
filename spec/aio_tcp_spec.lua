-- synchro.aio.tcp on real loopback sockets: streams, servers, errors,
-- back pressure, cancellation and leaks (libuv handles of the loop and
-- file descriptors of the process, before and after).
local synchro = require "synchro"
local util = require "spec.helpers.util"

local function has(s, part) return type(s) == "string" and
  s:find(part, 1, true) ~= nil end

describe("synchro.aio.tcp", function()
  local S
  setup(function() S = synchro.new({ name = "tcp-spec" }) end)
  teardown(function() S:close() end)

  local function run(fn, ...) return S:wrap(fn)(...) end

  it("connects, exchanges lines and names both ends", function()
    local r = run(function()
      local aio = require "synchro.aio"
      local net = require "spec.helpers.net"
      local before = net.snapshot()
      local server = assert(aio.tcp.listen("127.0.0.1", 0, function(s)
        while true do
          local line = s:read_line()
          if not line then return end
          assert(s:write(line:upper() .. "\r\n"))
        end
      end))
      local c = assert(aio.tcp.connect("127.0.0.1", server:port()))
      local r = { port = server:port() }
      assert(c:write("hello\nworld\n"))
      r.l1, r.l2 = c:read_line(), c:read_line()
      r.peer = { c:peername() }
      r.sock = { c:sockname() }
      r.srv = { server:sockname() }
      c:close()
      server:close()
      r.before, r.after = before, net.settle(before)
      return r
    end)
    assert.are.equal("HELLO", r.l1)
    assert.are.equal("WORLD", r.l2)
    assert.is_true(r.port > 0)
    assert.are.same({ "127.0.0.1", r.port }, r.peer)
    assert.are.same({ "127.0.0.1", r.port }, r.srv)
    assert.are.equal("127.0.0.1", r.sock[1])
    assert.are_not.equal(r.port, r.sock[2])
    assert.are.same(r.before, r.after)
  end)

  it("resolves names, and speaks IPv6 on ::1", function()
    local via_name, v6, v6peer = run(function()
      local aio = require "synchro.aio"
      local net = require "spec.helpers.net"
      local server = net.echo_server()
      local c = assert(aio.tcp.connect("localhost", server:port()))
      c:write("by name\n")
      local a = c:read_line()
      c:close()
      server:close()
      local server6, msg = aio.tcp.listen("::1", 0, function(s)
        s:write("six\n")
      end)
      if not server6 then return a, "no IPv6: " .. msg end
      local c6 = assert(aio.tcp.connect("::1", server6:port()))
      local b = c6:read_line()
      local peer = c6:peername()
      c6:close()
      server6:close()
      return a, b, peer
    end)
    assert.are.equal("by name", via_name)
    assert.are.equal("six", v6)
    assert.are.equal("::1", v6peer)
  end)

  it("reads with read, read_exactly, read_until and read_line", function()
    local r = run(function()
      local aio = require "synchro.aio"
      local payload = "abc\r\ndef\nGHIJ--end--rest of it"
      local server = assert(aio.tcp.listen("127.0.0.1", 0, function(s)
        s:write(payload)
      end))
      local c = assert(aio.tcp.connect("127.0.0.1", server:port()))
      local r = {}
      r.line1 = c:read_line()
      r.line2 = c:read_line()
      r.exact = c:read_exactly(2)
      r.upto = c:read_until("--end--")
      r.small = c:read(4)
      local rest = {}
      while true do
        local d = c:read()
        if not d then break end
        rest[#rest + 1] = d
      end
      r.rest = table.concat(rest)
      r.after_eof = { c:read() }
      r.line_after_eof = { c:read_line() }
      r.zero = c:read(0)
      c:close()
      server:close()
      return r
    end)
    assert.are.equal("abc", r.line1)
    assert.are.equal("def", r.line2)
    assert.are.equal("GH", r.exact)
    assert.are.equal("IJ", r.upto)
    assert.is_true(#r.small >= 1 and #r.small <= 4)
    assert.are.equal("rest of it", r.small .. r.rest)
    assert.are.same({}, r.after_eof)
    assert.are.same({}, r.line_after_eof)
    assert.are.equal("", r.zero)
  end)

  it("gives a last line without newline, then nil, when the peer closes " ..
     "mid-line", function()
    local r = run(function()
      local aio = require "synchro.aio"
      local server = assert(aio.tcp.listen("127.0.0.1", 0, function(s)
        s:write("complete\npart")
        aio.sleep(0.02)
        s:write("ial")
      end))
      local c = assert(aio.tcp.connect("127.0.0.1", server:port()))
      local r = { c:read_line(), c:read_line(), c:read_line() == nil,
        c:read() == nil }
      c:close()
      server:close()
      return r
    end)
    assert.are.same({ "complete", "partial", true, true }, r)
  end)

  it("returns the EOF triple from read_exactly and read_until, keeping " ..
     "the bytes", function()
    local r = run(function()
      local aio = require "synchro.aio"
      local server = assert(aio.tcp.listen("127.0.0.1", 0, function(s)
        s:write("abc")
      end))
      local c = assert(aio.tcp.connect("127.0.0.1", server:port()))
      local r = {}
      r.exactly = { c:read_exactly(10) }
      r.until_ = { c:read_until("X") }
      r.buffered = c:buffered()
      r.rest = c:read()
      r.eof = { c:read() }
      c:close()
      server:close()
      return r
    end)
    assert.are.same({ nil, "EOF: connection closed after 3 of 10 bytes",
      "EOF" }, r.exactly)
    assert.are.same({ nil, "EOF: connection closed before the delimiter",
      "EOF" }, r.until_)
    assert.are.equal(3, r.buffered)
    assert.are.equal("abc", r.rest)
    assert.are.same({}, r.eof)
  end)

  it("assembles what a peer writes byte by byte", function()
    local lines, blob, expected = run(function()
      local aio = require "synchro.aio"
      local bytes = {}
      for i = 0, 999 do bytes[#bytes + 1] = string.char(i % 256) end
      local binary = table.concat(bytes)
      local text = "line one\r\nline two\n" .. binary .. "last"
      local server = assert(aio.tcp.listen("127.0.0.1", 0, function(s)
        s:nodelay(true)
        for i = 1, #text do
          assert(s:write(text:sub(i, i)))
          if i % 7 == 0 then aio.sleep(0) end
        end
      end))
      local c = assert(aio.tcp.connect("127.0.0.1", server:port()))
      local a, b = c:read_line(), c:read_line()
      local blob = c:read_exactly(1000)
      local last = c:read_until("never")
      local tail = c:read_exactly(4)
      c:close()
      server:close()
      return { a, b, last, tail }, blob, binary
    end)
    assert.are.same({ "line one", "line two", nil, "last" }, lines)
    assert.are.equal(expected, blob)
  end)

  it("writes 8 MiB at once and reads it back exactly", function()
    local same, n = run(function()
      local aio = require "synchro.aio"
      local data = string.rep("0123456789abcdefghijklmnopqrstuvwxyz", 233017)
      local got
      local server = assert(aio.tcp.listen("127.0.0.1", 0, function(s)
        aio.sleep(0.05) -- the writer's kernel buffer fills meanwhile
        got = s:read_exactly(#data)
      end))
      local c = assert(aio.tcp.connect("127.0.0.1", server:port()))
      assert(c:write(data))
      c:shutdown()
      assert(c:read() == nil) -- the server closed: it has read everything
      c:close()
      server:close()
      return got == data, #data
    end)
    assert.is_true(n > 8 * 1024 * 1024)
    assert.is_true(same)
  end)

  it("applies back pressure: writes wait while the peer does not read",
     function()
    local r = run(function()
      local aio = require "synchro.aio"
      local chunk = string.rep("0123456789abcdef", 65536) -- 1 MiB
      local chunks = 32 -- more than the kernel buffers of both ends hold
      local go_read = false
      local server_stream
      local received, in_order = 0, true
      local server = assert(aio.tcp.listen("127.0.0.1", 0, function(s)
        server_stream = s
        while not go_read do aio.sleep(0.01) end
        while true do
          local d = s:read()
          if not d then break end
          local off = received % 16
          if d:sub(1, 16) ~= (chunk:sub(off + 1, off + 16)):sub(1, #d) then
            in_order = false
          end
          received = received + #d
        end
      end))
      local c = assert(aio.tcp.connect("127.0.0.1", server:port()))
      local written = 0
      local writer = aio.spawn(function()
        for _ = 1, chunks do
          assert(c:write(chunk))
          written = written + 1
        end
        c:shutdown()
      end)
      aio.sleep(0.3)
      local r = { stalled_at = written }
      aio.sleep(0.2)
      r.still = written
      r.server_buffered = server_stream:buffered()
      go_read = true
      writer:join()
      for _ = 1, 200 do
        if received == chunks * #chunk then break end
        aio.sleep(0.02)
      end
      r.received, r.expected, r.in_order = received, chunks * #chunk,
        in_order
      c:close()
      server:close()
      return r
    end)
    assert.is_true(r.stalled_at < 32, "all writes completed unread")
    assert.are.equal(r.stalled_at, r.still)
    assert.are.equal(0, r.server_buffered)
    assert.are.equal(r.expected, r.received)
    assert.is_true(r.in_order)
  end)

  it("returns the ECONNREFUSED triple", function()
    local r = run(function()
      local aio = require "synchro.aio"
      local server = assert(aio.tcp.listen("127.0.0.1", 0))
      local port = server:port()
      server:close()
      return { aio.tcp.connect("127.0.0.1", port) }
    end)
    assert.are.same({ nil, "ECONNREFUSED: connection refused",
      "ECONNREFUSED" }, r)
  end)

  -- No traffic may leave loopback, so no unroutable address: a server
  -- whose backlog is full makes the kernel drop new SYNs, and a connect
  -- to it hangs until the timeout.
  it("times out connecting to a server whose backlog is full", function()
    local r = run(function()
      local aio = require "synchro.aio"
      local net = require "spec.helpers.net"
      local before = net.snapshot()
      local server, fillers = net.full_server()
      local t0 = aio.now()
      local r = { aio.tcp.connect("127.0.0.1", server:port(),
        { timeout = 0.2 }) }
      r.elapsed = aio.now() - t0
      for _, c in ipairs(fillers) do c:close() end
      server:close()
      r.before, r.after = before, net.settle(before)
      return r
    end)
    assert.are.same({ nil, "ETIMEDOUT: timed out after 0.2 s", "ETIMEDOUT" },
      { r[1], r[2], r[3] })
    assert.is_true(r.elapsed < 5, r.elapsed)
    assert.are.same(r.before, r.after)
  end)

  describe("cancellation", function()
    it("stops a waiting read; data that comes later is read next",
       function()
      local r = run(function()
        local aio = require "synchro.aio"
        local net = require "spec.helpers.net"
        local server = assert(aio.tcp.listen("127.0.0.1", 0))
        local c = assert(aio.tcp.connect("127.0.0.1", server:port()))
        local s = assert(server:accept())
        local before = net.snapshot()
        local reader = aio.spawn(function() return c:read() end)
        aio.sleep(0.05)
        local t0 = aio.now()
        reader:cancel()
        local ok, err = pcall(reader.join, reader)
        local r = { ok = ok, cancelled = aio.is_cancelled(err),
          elapsed = aio.now() - t0 }
        s:write("later")
        r.later = c:read()
        r.before, r.mid = before, net.count() -- no GC: closed at once
        c:close()
        s:close()
        server:close()
        return r
      end)
      assert.is_false(r.ok)
      assert.is_true(r.cancelled)
      assert.is_true(r.elapsed < 0.5, r.elapsed)
      assert.are.equal("later", r.later)
      assert.are.same(r.before, r.mid)
    end)

    it("keeps the bytes a cancelled read_exactly had buffered", function()
      local r = run(function()
        local aio = require "synchro.aio"
        local server = assert(aio.tcp.listen("127.0.0.1", 0))
        local c = assert(aio.tcp.connect("127.0.0.1", server:port()))
        local s = assert(server:accept())
        local reader = aio.spawn(function() return c:read_exactly(10) end)
        s:write("abc")
        aio.sleep(0.05)
        reader:cancel()
        local ok = pcall(reader.join, reader)
        s:write("defghij")
        local r = { ok = ok, data = c:read_exactly(10) }
        c:close()
        s:close()
        server:close()
        return r
      end)
      assert.is_false(r.ok)
      assert.are.equal("abcdefghij", r.data)
    end)

    it("stops a waiting accept; the next accept gets the connection",
       function()
      local r = run(function()
        local aio = require "synchro.aio"
        local net = require "spec.helpers.net"
        local server = assert(aio.tcp.listen("127.0.0.1", 0))
        local before = net.snapshot()
        local acceptor = aio.spawn(function() return server:accept() end)
        aio.sleep(0.05)
        local t0 = aio.now()
        acceptor:cancel()
        local ok, err = pcall(acceptor.join, acceptor)
        local r = { ok = ok, cancelled = aio.is_cancelled(err),
          elapsed = aio.now() - t0 }
        r.before, r.mid = before, net.count() -- no GC: closed at once
        local c = assert(aio.tcp.connect("127.0.0.1", server:port()))
        local s = assert(server:accept())
        c:write("hi")
        r.got = s:read()
        c:close()
        s:close()
        server:close()
        return r
      end)
      assert.is_false(r.ok)
      assert.is_true(r.cancelled)
      assert.is_true(r.elapsed < 0.5, r.elapsed)
      assert.are.same(r.before, r.mid)
      assert.are.equal("hi", r.got)
    end)

    it("stops a pending connect and closes its handle", function()
      local r = run(function()
        local aio = require "synchro.aio"
        local net = require "spec.helpers.net"
        local server, fillers = net.full_server()
        local before = net.snapshot()
        local connector = aio.spawn(function()
          return aio.tcp.connect("127.0.0.1", server:port())
        end)
        aio.sleep(0.1)
        local r = { pending = net.snapshot() }
        local t0 = aio.now()
        connector:cancel()
        local ok, err = pcall(connector.join, connector)
        r.ok, r.cancelled, r.elapsed = ok, aio.is_cancelled(err),
          aio.now() - t0
        r.now = net.count() -- no GC: closed at once
        r.before, r.after = before, net.settle(before)
        for _, c in ipairs(fillers) do c:close() end
        server:close()
        return r
      end)
      assert.is_false(r.ok)
      assert.is_true(r.cancelled)
      assert.is_true(r.elapsed < 0.5, r.elapsed)
      assert.are.equal(r.before.handles + 1, r.pending.handles)
      assert.are.same(r.before, r.now)
      assert.are.same(r.before, r.after)
    end)

    it("leaves a cancelled write's data queued, in order", function()
      local r = run(function()
        local aio = require "synchro.aio"
        local server = assert(aio.tcp.listen("127.0.0.1", 0))
        local c = assert(aio.tcp.connect("127.0.0.1", server:port()))
        local s = assert(server:accept())
        local big = string.rep("a", 16 * 1024 * 1024)
        local writer = aio.spawn(function() return c:write(big) end)
        aio.sleep(0.05)
        writer:cancel()
        local ok = pcall(writer.join, writer)
        local r = { ok = ok }
        aio.spawn(function()
          c:write("after")
          c:shutdown()
        end)
        local got = s:read_exactly(#big + 5)
        r.n, r.tail, r.all_a = got and #got, got and got:sub(-5),
          got and got:sub(1, #big) == big
        c:close()
        s:close()
        server:close()
        return r
      end)
      assert.is_false(r.ok)
      assert.are.equal(16 * 1024 * 1024 + 5, r.n)
      assert.are.equal("after", r.tail)
      assert.is_true(r.all_a)
    end)
  end)

  it("wakes a reader and a writer with ECANCELED when another task " ..
     "closes the stream",
     function()
    local r = run(function()
      local aio = require "synchro.aio"
      local server = assert(aio.tcp.listen("127.0.0.1", 0))
      local c = assert(aio.tcp.connect("127.0.0.1", server:port()))
      local s = assert(server:accept())
      local reader = aio.spawn(function() return { c:read() } end)
      local writer = aio.spawn(function()
        return { c:write(string.rep("w", 16 * 1024 * 1024)) }
      end)
      aio.sleep(0.05)
      c:close()
      c:close() -- idempotent
      local r = { woke = reader:join(), write = writer:join() }
      r.ok, r.err = pcall(c.read, c)
      r.wok, r.werr = pcall(c.write, c, "x")
      s:close()
      server:close()
      return r
    end)
    assert.are.same({ nil, "ECANCELED: operation canceled", "ECANCELED" },
      r.woke)
    assert.are.same({ nil, "ECANCELED: operation canceled", "ECANCELED" },
      r.write)
    assert.is_false(r.ok)
    assert.is_true(has(r.err, "bad argument #1 to 'read' (stream is closed)"),
      r.err)
    assert.is_false(r.wok)
    assert.is_true(has(r.werr,
      "bad argument #1 to 'write' (stream is closed)"), r.werr)
  end)

  it("raises on misuse, naming the argument", function()
    local r = run(function()
      local aio = require "synchro.aio"
      local function err(fn, ...)
        local ok, e = pcall(fn, ...)
        return ok and "no error" or tostring(e)
      end
      local server = assert(aio.tcp.listen("127.0.0.1", 0))
      local c = assert(aio.tcp.connect("127.0.0.1", server:port()))
      local reader = aio.spawn(function() return c:read() end)
      coroutine.yield()
      local r = {
        err(aio.tcp.connect, nil, 80),
        err(aio.tcp.connect, "127.0.0.1", 70000),
        err(aio.tcp.connect, "127.0.0.1", 80, { timeout = "x" }),
        err(aio.tcp.listen, "127.0.0.1", 0, 42),
        err(c.read_until, c, ""),
        err(c.read_exactly, c, -1),
        err(c.write, c, {}),
        err(c.read, c),
        err(server.accept, 42),
        err(c.read, c, 2.5),
      }
      reader:cancel()
      pcall(reader.join, reader)
      c:close()
      server:close()
      r[#r + 1] = err(server.port, server)
      return r
    end)
    local want = {
      "bad argument #1 to 'connect' (string expected, got nil)",
      "bad argument #2 to 'connect' (port out of range)",
      "bad argument #3 to 'connect' (timeout: number expected, got string)",
      "bad argument #3 to 'listen' (function expected, got number)",
      "bad argument #1 to 'read_until' (non-empty string expected, " ..
        "got an empty string)",
      "bad argument #1 to 'read_exactly' (non-negative integer expected, " ..
        "got -1)",
      "bad argument #1 to 'write' (string expected, got table)",
      "another task is already reading from this stream",
      "bad argument #1 to 'accept' (server expected, got number)",
      "bad argument #1 to 'read' (non-negative integer expected, got 2.5)",
      "bad argument #1 to 'port' (server is closed)",
    }
    for i = 1, #want do
      assert.is_true(has(r[i], want[i]), ("%q in %q"):format(want[i], r[i]))
    end
  end)

  it("raises outside async code", function()
    local tcp = require "synchro.aio.tcp"
    local ok, err = pcall(tcp.connect, "127.0.0.1", 1)
    assert.is_false(ok)
    assert.is_true(has(err, "must be called from async code"), err)
  end)

  it("shuts the write side down and still reads the reply", function()
    local r = run(function()
      local aio = require "synchro.aio"
      local server = assert(aio.tcp.listen("127.0.0.1", 0, function(s)
        local n = 0
        while true do
          local d = s:read()
          if not d then break end
          n = n + #d
        end
        s:write("got " .. n .. "\n")
      end))
      local c = assert(aio.tcp.connect("127.0.0.1", server:port()))
      c:write("abcdef")
      local r = { c:shutdown(), c:nodelay(true), c:keepalive(true, 10),
        c:keepalive(false), c:read_line() }
      c:close()
      server:close()
      return r
    end)
    assert.are.same({ true, true, true, true, "got 6" }, r)
  end)

  it("returns an error triple when writing to a peer that is gone",
     function()
    local r = run(function()
      local aio = require "synchro.aio"
      local server = assert(aio.tcp.listen("127.0.0.1", 0, function() end))
      local c = assert(aio.tcp.connect("127.0.0.1", server:port()))
      local r = { c:read() } -- EOF: the handler returned
      local chunk = string.rep("x", 65536)
      for _ = 1, 200 do
        local ok, msg, code = c:write(chunk)
        if not ok then
          r.msg, r.code = msg, code
          break
        end
        aio.sleep(0.005)
      end
      c:close()
      server:close()
      return r
    end)
    assert.is_nil(r[1])
    assert.is_true(r.code == "EPIPE" or r.code == "ECONNRESET", r.code)
    assert.is_true(has(r.msg, r.code .. ": "), r.msg)
  end)

  it("closes dropped streams on garbage collection, and with __close",
     function()
    local r = run(function()
      local aio = require "synchro.aio"
      local net = require "spec.helpers.net"
      local server = net.echo_server()
      local before = net.snapshot()
      local function use_and_drop()
        local c = assert(aio.tcp.connect("127.0.0.1", server:port()))
        c:write("x")
        assert(c:read() == "x")
      end
      use_and_drop()
      local r = { opened = net.count() }
      r.collected = net.settle(before)
      local c = assert(aio.tcp.connect("127.0.0.1", server:port()))
      getmetatable(c).__close(c)
      r.closed = c:is_closed()
      if _VERSION == "Lua 5.4" then
        assert(load([[
          local aio, port = ...
          local c <close> = assert(aio.tcp.connect("127.0.0.1", port))
          c:write("y")
          assert(c:read() == "y")
        ]]))(aio, server:port())
      end
      r.after = net.settle(before)
      r.before = before
      server:close()
      return r
    end)
    assert.are.equal(r.before.handles + 2, r.opened.handles)
    assert.are.same(r.before, r.collected)
    assert.is_true(r.closed)
    assert.are.same(r.before, r.after)
  end)

  it("cancels its connection handlers on server:close()", function()
    local r = run(function()
      local aio = require "synchro.aio"
      local net = require "spec.helpers.net"
      local before = net.snapshot()
      local cleaned = {}
      local server = assert(aio.tcp.listen("127.0.0.1", 0, function(s)
        local ok, err = pcall(s.read, s)
        cleaned[#cleaned + 1] = not ok and aio.is_cancelled(err)
        error(err, 0)
      end))
      local port = server:port()
      local c1 = assert(aio.tcp.connect("127.0.0.1", port))
      local c2 = assert(aio.tcp.connect("127.0.0.1", port))
      for _ = 1, 100 do
        if server:connections() == 2 then break end
        aio.sleep(0.01)
      end
      local r = { running = server:connections() }
      server:close()
      server:close() -- idempotent
      r.eof1, r.eof2 = c1:read() == nil, c2:read() == nil
      r.cleaned = cleaned
      r.left = server:connections()
      r.refused = select(3, aio.tcp.connect("127.0.0.1", port))
      c1:close()
      c2:close()
      r.before, r.after = before, net.settle(before)
      return r
    end)
    assert.are.equal(2, r.running)
    assert.is_true(r.eof1 and r.eof2)
    assert.are.same({ true, true }, r.cleaned)
    assert.are.equal(0, r.left)
    assert.are.equal("ECONNREFUSED", r.refused)
    assert.are.same(r.before, r.after)
  end)

  it("reports a failing handler on stderr and keeps serving #subprocess",
     function()
    local h = util.spawn_lua(("package.path = %q\npackage.cpath = %q\n")
      :format(package.path, package.cpath) .. [[
      local synchro = require "synchro"
      local S = synchro.new()
      print(S:wrap(function()
        local aio = require "synchro.aio"
        local server = assert(aio.tcp.listen("127.0.0.1", 0, function(s)
          local line = s:read_line()
          if line == "boom" then error("handler exploded") end
          s:write("fine\n")
        end))
        local out = {}
        for _, msg in ipairs({ "boom\n", "ok\n", "boom\n", "ok\n" }) do
          local c = assert(aio.tcp.connect("127.0.0.1", server:port()))
          c:write(msg)
          out[#out + 1] = tostring(c:read_line())
          c:close()
        end
        server:close()
        return table.concat(out, ",")
      end)())
      S:close()
    ]])
    local code = util.wait_exit(h, 30)
    local out, err = util.read(h.out) or "", util.read(h.err) or ""
    util.cleanup(h)
    assert.are.equal(0, code, err)
    assert.are.equal("nil,fine,nil,fine\n", out)
    local n = select(2, err:gsub("connection handler failed", ""))
    assert.are.equal(2, n, err)
    assert.is_true(has(err, "handler exploded"), err)
    assert.is_true(has(err, "stack traceback"), err)
  end)

  -- 1,000 clients and 1,000 accepted streams need over 2,000 descriptors:
  -- more than the usual soft limit of 1,024, so this runs in a child
  -- process whose shell raises the soft limit first. If the hard limit
  -- does not allow it, the child uses as many connections as fit and says
  -- how many.
  it("serves 1,000 concurrent connections #subprocess", function()
    local h = util.spawn_lua(("package.path = %q\npackage.cpath = %q\n")
      :format(package.path, package.cpath) .. [[
      local f = assert(io.open("/proc/self/limits"))
      local limit = f:read("*a"):match("Max open files%s+(%d+)")
      f:close()
      local n = math.min(1000, math.floor((tonumber(limit) - 100) / 2))
      local synchro = require "synchro"
      local S = synchro.new()
      local r = S:wrap(function(n)
        local aio = require "synchro.aio"
        local net = require "spec.helpers.net"
        local unpack = table.unpack or unpack
        local before = net.snapshot()
        local server = assert(aio.tcp.listen("127.0.0.1", 0, function(s)
          local line = s:read_line()
          if line then s:write(line .. "!\n") end
        end, { backlog = 1024 }))
        local port = server:port()
        local conns, fns = {}, {}
        for i = 1, n do
          fns[i] = function()
            conns[i] = assert(aio.tcp.connect("127.0.0.1", port,
              { timeout = 20 }))
            return true
          end
        end
        aio.gather(unpack(fns))
        local peak = 0
        for _ = 1, 500 do
          peak = server:connections()
          if peak == n then break end
          aio.sleep(0.01)
        end
        for i = 1, n do
          fns[i] = function()
            local c = conns[i]
            c:write("hello " .. i .. "\n")
            local reply = c:read_line()
            c:close()
            return reply == "hello " .. i .. "!"
          end
        end
        local ok = 0
        for _, v in ipairs({ aio.gather(unpack(fns)) }) do
          if v == true then ok = ok + 1 end
        end
        server:close()
        local after = net.settle(before)
        return ("n=%d peak=%d ok=%d leaked_handles=%d leaked_fds=%d")
          :format(n, peak, ok, after.handles - before.handles,
            after.fds - before.fds)
      end)(n)
      print(r)
      S:close()
    ]], ("sh -c 'ulimit -n 4096 2>/dev/null; exec \"$0\" \"$@\"' %s")
      :format(util.interpreter()))
    local code = util.wait_exit(h, 60)
    local out, err = util.read(h.out) or "", util.read(h.err) or ""
    util.cleanup(h)
    assert.are.equal(0, code, err)
    local n = tonumber(out:match("n=(%d+)"))
    assert.is_truthy(n, out .. err)
    assert.is_true(n >= 400, out) -- fewer only under a tiny hard limit
    assert.are.equal(("n=%d peak=%d ok=%d leaked_handles=0 leaked_fds=0\n")
      :format(n, n, n), out)
  end)
end)
