-- synchro.aio.dns. Only lookups that never leave the machine: numeric
-- addresses, "localhost" (/etc/hosts) and service names (/etc/services).
local synchro = require "synchro"

local function has(s, part) return type(s) == "string" and
  s:find(part, 1, true) ~= nil end

describe("synchro.aio.dns", function()
  local S
  setup(function() S = synchro.new({ name = "dns-spec" }) end)
  teardown(function() S:close() end)

  local function run(fn, ...) return S:wrap(fn)(...) end

  it("resolves localhost and numeric addresses", function()
    local r = run(function()
      local dns = require("synchro.aio").dns
      local r = {}
      r.localhost = dns.getaddrinfo("localhost", 8080)
      r.v4 = dns.getaddrinfo("127.0.0.1")
      r.v6 = dns.getaddrinfo("::1", "80", { family = "inet6" })
      r.dgram = dns.getaddrinfo("127.0.0.1", 53, { socktype = "dgram" })
      r.any = dns.getaddrinfo("127.0.0.1", 53, { socktype = "any" })
      r.family = dns.ip_family("::1")
      r.not_ip = dns.ip_family("localhost")
      return r
    end)
    local found = false
    for _, a in ipairs(r.localhost) do
      if a.addr == "127.0.0.1" and a.port == 8080 and a.family == "inet" and
          a.socktype == "stream" then
        found = true
      end
    end
    assert.is_true(found)
    assert.are.same({ { addr = "127.0.0.1", port = 0, family = "inet",
      socktype = "stream" } }, r.v4)
    assert.are.same({ { addr = "::1", port = 80, family = "inet6",
      socktype = "stream" } }, r.v6)
    assert.are.same({ { addr = "127.0.0.1", port = 53, family = "inet",
      socktype = "dgram" } }, r.dgram)
    assert.is_true(#r.any >= 2) -- once per socket type
    assert.are.equal("inet6", r.family)
    assert.is_nil(r.not_ip)
  end)

  it("resolves service names", function()
    local r = run(function()
      local dns = require("synchro.aio").dns
      return dns.getaddrinfo("127.0.0.1", "http")
    end)
    assert.are.equal(80, r[1].port)
  end)

  it("returns the error triple for names that do not resolve", function()
    local r = run(function()
      local dns = require("synchro.aio").dns
      return {
        service = { dns.getaddrinfo("127.0.0.1", "no-such-service-here") },
        family = { dns.getaddrinfo("::1", nil, { family = "inet" }) },
      }
    end)
    for _, t in pairs(r) do
      assert.is_nil(t[1])
      assert.is_true(type(t[3]) == "string" and t[3]:find("^EAI_") ~= nil,
        tostring(t[3]))
      assert.is_true(has(t[2], t[3] .. ": "), t[2])
    end
  end)

  it("gives host and service names of an address", function()
    local r = run(function()
      local dns = require("synchro.aio").dns
      return { { dns.getnameinfo("127.0.0.1", 80) },
        { dns.getnameinfo("127.0.0.1", 80, { numeric = true }) },
        { dns.getnameinfo("::1", 443, { numeric = true }) } }
    end)
    assert.are.same({ "localhost", "http" }, r[1])
    assert.are.same({ "127.0.0.1", "80" }, r[2])
    assert.are.same({ "::1", "443" }, r[3])
  end)

  -- Regression: getnameinfo gave host, service and a trailing nil (the
  -- DNS example of docs/aio-net.md printed it).
  it("getnameinfo trailing nil: exactly host and service", function()
    local n = run(function()
      local dns = require("synchro.aio").dns
      return select("#", dns.getnameinfo("::1", 443, { numeric = true }))
    end)
    assert.are.equal(2, n)
  end)

  it("runs many lookups at once", function()
    local n = run(function()
      local aio = require "synchro.aio"
      local fns = {}
      for i = 1, 50 do
        fns[i] = function()
          local list = assert(aio.dns.getaddrinfo("localhost", i))
          return list[1].port
        end
      end
      local ports = { aio.gather((table.unpack or unpack)(fns)) }
      local ok = 0
      for i = 1, 50 do
        if ports[i] == i then ok = ok + 1 end
      end
      return ok
    end)
    assert.are.equal(50, n)
  end)

  it("cancels a lookup promptly, without leaks", function()
    local r = run(function()
      local aio = require "synchro.aio"
      local net = require "spec.helpers.net"
      local before = net.snapshot()
      local tasks, results = {}, {}
      for i = 1, 20 do
        tasks[i] = aio.spawn(aio.dns.getaddrinfo, "localhost", i)
      end
      coroutine.yield() -- they start their lookups and wait
      local waiting = 0
      for i = 1, 20 do
        if tasks[i].state == "waiting" then waiting = waiting + 1 end
        tasks[i]:cancel()
      end
      for i = 1, 20 do results[i] = select(2, pcall(tasks[i].join, tasks[i])) end
      local cancelled = 0
      for i = 1, 20 do
        if aio.is_cancelled(results[i]) then cancelled = cancelled + 1 end
      end
      aio.sleep(0.1) -- lookups that had started finish and are dropped
      local after = net.settle(before)
      -- still works afterwards
      local again = aio.dns.getaddrinfo("localhost", 1)
      return { cancelled = cancelled, before = before, after = after,
        again = again[1].port, waiting = waiting }
    end)
    assert.are.equal(20, r.waiting)
    assert.are.equal(20, r.cancelled)
    assert.are.same(r.before, r.after)
    assert.are.equal(1, r.again)
  end)

  it("raises on misuse and outside async code", function()
    local r = run(function()
      local dns = require("synchro.aio").dns
      local function err(fn, ...)
        local ok, e = pcall(fn, ...)
        return ok and "no error" or tostring(e)
      end
      return {
        err(dns.getaddrinfo, 42),
        err(dns.getaddrinfo, nil, nil),
        err(dns.getaddrinfo, "localhost", {}),
        err(dns.getaddrinfo, "localhost", 80, { family = "ipx" }),
        err(dns.getnameinfo, "localhost", 80),
        err(dns.getnameinfo, "127.0.0.1", "80"),
      }
    end)
    local want = {
      "bad argument #1 to 'getaddrinfo' (string expected, got number)",
      "bad argument #1 to 'getaddrinfo' (host or service expected)",
      "bad argument #2 to 'getaddrinfo' (string or number expected, " ..
        "got table)",
      "bad argument #3 to 'getaddrinfo' (bad family 'ipx')",
      "bad argument #1 to 'getnameinfo' (numeric IPv4 or IPv6 address " ..
        "expected)",
      "bad argument #2 to 'getnameinfo' (number expected, got string)",
    }
    for i = 1, #want do
      assert.is_true(has(r[i], want[i]), ("%q in %q"):format(want[i], r[i]))
    end
    local dns = require "synchro.aio.dns"
    local ok, err = pcall(dns.getaddrinfo, "localhost")
    assert.is_false(ok)
    assert.is_true(has(err, "must be called from async code"), err)
  end)
end)
