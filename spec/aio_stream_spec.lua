-- synchro.aio.stream: the same stream cases against every transport (a
-- real TCP connection on 127.0.0.1, a real child's pipes, TLS over TCP
-- with certificates made by the openssl command), and
-- aio.stdin() in a child fed through a pipe.
local synchro = require "synchro"
local util = require "spec.helpers.util"
local certs = require "spec.helpers.tls"

describe("synchro.aio.stream", function()
  local S, dir
  setup(function()
    S = synchro.new({ name = "stream-spec" })
    dir = certs.certs()
  end)
  teardown(function()
    S:close()
    certs.remove(dir)
  end)

  -- Runs case(w, r) in the loop, where bytes written to w arrive at r,
  -- over the transport named kind; returns case's results in a table.
  local function over(kind, case)
    return S:wrap(function(k, d)
      local aio = require "synchro.aio"
      local w, r, done
      if k == "tls" then
        local tls = aio.tls
        local server = assert(tls.listen("127.0.0.1", 0,
          { cert = d .. "/server.pem", key = d .. "/server.key" }))
        local accepted = aio.spawn(server.accept, server)
        w = assert(tls.connect("localhost", server:port(),
          { cafile = d .. "/ca.pem" }))
        r = assert(accepted:join())
        done = function() w:close(); r:close(); server:close() end
      elseif k == "tcp" then
        local server = assert(aio.tcp.listen("127.0.0.1", 0))
        w = assert(aio.tcp.connect("127.0.0.1", server:port()))
        r = assert(server:accept())
        done = function() w:close(); r:close(); server:close() end
      else
        local p = assert(aio.process.spawn("cat", {},
          { stdin = "pipe", stdout = "pipe" }))
        w, r = p.stdin, p.stdout
        done = function() p:close(); p:wait() end
      end
      local ypcall = require("synchro.sched").yieldable_pcalls()
      local res = { ypcall(case, w, r, aio) }
      done()
      return res
    end)(kind, dir)
  end

  local kinds = { "tcp", "pipe", "tls" }
  if require("synchro.core").tls_session == nil then kinds[3] = nil end
  for _, kind in ipairs(kinds) do
    describe("over " .. kind, function()
      it("reads lines ending in \\n or \\r\\n, keeps them on request", function()
        local res = over(kind, function(w, r)
          assert(w:write("a\nb\r\nc\r\nd\ne"))
          w:close()
          local out = { r:read_line(), r:read_line(),
            r:read_line({ keep_newline = true }),
            r:read_line({ keep_newline = true }) }
          out[5] = r:read_line()
          out[6] = tostring(r:read_line())
          return out
        end)
        assert.is_true(res[1])
        assert.same({ "a", "b", "c\r\n", "d\n", "e", "nil" }, res[2])
      end)

      it("reads exactly, until a delimiter, at most n, and all", function()
        local res = over(kind, function(w, r)
          assert(w:write("12345::rest of it"))
          local x = r:read_exactly(3)
          local y = r:read_until("::")
          local z = r:read(4)
          w:close()
          local all = r:read_all()
          local e1, e2, e3 = r:read_exactly(1)
          return { x, y, z, all, tostring(e1), e2, e3 }
        end)
        assert.is_true(res[1])
        assert.same({ "123", "45", "rest", " of it", "nil",
          "EOF: connection closed after 0 of 1 bytes", "EOF" }, res[2])
      end)

      -- PUC Lua 5.1 cannot yield from a for iterator
      local can_yield_in_for = _VERSION ~= "Lua 5.1" or jit ~= nil
      local it_lines = can_yield_in_for and it or pending
      it_lines("iterates lines()", function()
        local res = over(kind, function(w, r)
          assert(w:write("x\r\ny\nz"))
          w:close()
          local t = {}
          for line in r:lines() do t[#t + 1] = line end
          return t
        end)
        assert.is_true(res[1])
        assert.same({ "x", "y", "z" }, res[2])
      end)

      it("a cancelled read loses nothing; the next read gets the data",
        function()
          local res = over(kind, function(w, r, aio)
            local a, b, c = aio.timeout(0.05, r.read, r)
            assert(w:write("late"))
            return { tostring(a), b, c, r:read() }
          end)
          assert.is_true(res[1])
          assert.same("nil", res[2][1])
          assert.same("ETIMEDOUT", res[2][3])
          assert.same("late", res[2][4])
        end)

      it("a big write waits for the reader (back pressure) and arrives whole",
        function()
          local res = over(kind, function(w, r, aio)
            local big = ("0123456789abcdef"):rep(256 * 1024) -- 4 MiB
            local t = aio.spawn(function() return w:write(big) end)
            local got = assert(r:read_exactly(#big))
            return { t:join(), got == big }
          end)
          assert.is_true(res[1])
          assert.same({ true, true }, res[2])
        end)

      it("misuse raises naming the argument", function()
        local res = over(kind, function(w, r)
          local e = {}
          local ypcall = require("synchro.sched").yieldable_pcalls()
          e[1] = select(2, ypcall(r.read_line, r, { keep = true }))
          e[2] = select(2, ypcall(r.read_line, r, 5))
          w:close()
          e[3] = select(2, ypcall(w.write, w, "x"))
          e[4] = select(2, ypcall(r.read_until, r, ""))
          return e
        end)
        assert.is_true(res[1])
        assert.matches("bad argument #1 to 'read_line'.*keep", res[2][1])
        assert.matches("bad argument #1 to 'read_line'", res[2][2])
        assert.matches("bad argument #1 to 'write' %(stream is closed%)",
          res[2][3])
        assert.matches("bad argument #1 to 'read_until'", res[2][4])
      end)
    end)
  end

  it("aio.stdin() reads a child's stdin fed through a pipe", function()
    local script = ([[
      package.path = %q
      package.cpath = %q
      local S = require("synchro").new()
      local f = S:wrap(function()
        local aio = require "synchro.aio"
        local s = assert(aio.stdin())
        assert(aio.stdin() == s)
        local t = {}
        while true do
          local line = s:read_line()
          if not line then break end
          t[#t + 1] = line
        end
        return table.concat(t, ",")
      end)
      io.write(f())
      S:close()
    ]]):format(package.path, package.cpath)
    local out, err, code = S:wrap(function(interp, src)
      local aio = require "synchro.aio"
      return aio.process.run(interp, { "-e", src },
        { stdin = "one\r\ntwo\nthree" })
    end)(util.interpreter(), script)
    assert.same("", err)
    assert.same(0, code)
    assert.same("one,two,three", out)
  end)

  it("aio.stdin() on /dev/null: nil, EINVAL", function()
    local script = ([[
      package.path = %q
      package.cpath = %q
      local S = require("synchro").new()
      io.write(select(3, S:wrap(function()
        return require("synchro.aio").stdin()
      end)()))
      S:close()
    ]]):format(package.path, package.cpath)
    local out, err = S:wrap(function(interp, src)
      return require("synchro.aio").process.run(interp, { "-e", src },
        { stdin = "ignore" })
    end)(util.interpreter(), script)
    assert.same("", err)
    assert.same("EINVAL", out)
  end)
end)
