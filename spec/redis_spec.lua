-- The Redis client example (examples/redis) against a real redis-server.
local util = require "spec.helpers.util"
local redis_server = require "spec.helpers.redis"

-- the loop VM of wrap_module copies this path: set it before any
-- synchronizer of the example is created
package.path = "examples/redis/?.lua;examples/redis/?/init.lua;" ..
  package.path
local synchro = require "synchro"

local function sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  return out
end

describe("redis example", function()
  local redis, S, port, server, publish, free_port

  setup(function()
    assert(sh("command -v redis-server") ~= "",
      "redis-server is not installed (tools/deps.sh installs it)")
    redis = require "redis_async"
    S = synchro.new({ name = "redis-spec" })
    free_port = S:wrap(function()
      local aio = require "synchro.aio"
      local probe = assert(aio.tcp.listen("127.0.0.1", 0))
      local p = probe:port()
      probe:close()
      return p
    end)
    -- publishes messages once `subs` subscribers listen on channel
    publish = S:wrap(function(p, channel, messages, subs)
      local aio = require "synchro.aio"
      local pub = assert(require("redis_async.impl").connect("127.0.0.1", p))
      for _ = 1, 1000 do
        if pub:command("PUBSUB", "NUMSUB", channel)[2] >= (subs or 1) then
          break
        end
        aio.sleep(0.01)
      end
      for _, m in ipairs(messages) do pub:command("PUBLISH", channel, m) end
      pub:close()
    end)
    port = free_port()
    server = redis_server.start(port, redis.connect)
  end)

  teardown(function()
    redis_server.stop(server)
    if S then S:close() end
  end)

  local function connect()
    return assert(redis.connect("127.0.0.1", port))
  end

  it("sets, gets, increments and deletes", function()
    local c = connect()
    assert.is_true(synchro.is_proxy(c))
    assert.are.equal("OK", c:set("k", "v"))
    assert.are.equal("v", c:get("k"))
    assert.is_nil(c:get("no such key"))
    assert.are.equal(1, c:del("k"))
    assert.are.equal(0, c:del("k"))
    assert.are.equal(1, c:incr("n1"))
    local n = c:incr("n1")
    assert.are.equal(2, n)
    if util.integers then assert.are.equal("integer", math.type(n)) end
    assert.are.equal("OK", c:set("bin", "a\r\nb\0c"))
    assert.are.equal("a\r\nb\0c", c:get("bin"))
    assert.are.equal(2, c:del("n1", "bin"))
    c:close()
  end)

  it("sends any command and converts its reply", function()
    local c = connect()
    assert.are.equal("PONG", c:command("PING"))
    c:del("list")
    assert.are.equal(3, c:command("RPUSH", "list", "a", 2, "c"))
    assert.are.same({ n = 3, "a", "2", "c" },
      c:command("LRANGE", "list", 0, -1))
    assert.are.same({ n = 0 }, c:command("LRANGE", "nothing", 0, -1))
    assert.is_nil(c:command("BLPOP", "nothing", "0.01")) -- a nil array
    -- misuse raises naming the argument
    -- misuse raises naming the argument (the remote frames follow)
    local ok, err = pcall(c.command, c)
    assert.is_false(ok)
    assert.are.equal(1, err:find(
      "bad argument #1 to 'command' (string expected, got no value)", 1,
      true))
    ok, err = pcall(c.pipeline, c, 5)
    assert.is_false(ok)
    assert.are.equal(1, err:find(
      "bad argument #1 to 'pipeline' (table expected, got number)", 1, true))
    c:close()
  end)

  it("raises server errors with the server's text", function()
    local c = connect()
    local ok, err = pcall(c.command, c, "GET")
    assert.is_false(ok)
    assert.matches("^ERR wrong number of arguments for 'get' command", err)
    c:set("str", "x")
    ok, err = pcall(c.incr, c, "str")
    assert.is_false(ok)
    assert.matches("^ERR value is not an integer or out of range", err)
    c:command("RPUSH", "alist", "x")
    ok, err = pcall(c.get, c, "alist")
    assert.is_false(ok)
    assert.matches("^WRONGTYPE ", err)
    assert.are.equal("x", c:get("str")) -- the connection is still in step
    c:del("str", "alist")
    c:close()
  end)

  it("returns nil, msg, code when it cannot connect", function()
    local closed = free_port()
    local c, msg, code = redis.connect("127.0.0.1", closed)
    assert.is_nil(c)
    assert.are.equal("ECONNREFUSED: connection refused", msg)
    assert.are.equal("ECONNREFUSED", code)
    assert.has_error(function() redis.connect(42) end)
  end)

  it("pipelines 100 commands", function()
    local c = connect()
    c:del("p")
    local cmds = {}
    for i = 1, 100 do cmds[i] = { "INCR", "p" } end
    local replies = c:pipeline(cmds)
    assert.are.equal(100, replies.n)
    for i = 1, 100 do assert.are.equal(i, replies[i]) end
    -- nil replies leave holes; an error is raised once all were read
    replies = c:pipeline({ { "GET", "p" }, { "GET", "none" }, { "PING" } })
    assert.are.same({ n = 3, "100", nil, "PONG" }, replies)
    local ok, err = pcall(c.pipeline, c,
      { { "INCR", "p" }, { "GET" }, { "INCR", "p" } })
    assert.is_false(ok)
    assert.matches("^ERR wrong number of arguments", err)
    assert.are.equal("102", c:get("p"))
    assert.are.same({ n = 0 }, c:pipeline({}))
    c:del("p")
    c:close()
  end)

  it("serializes concurrent calls on one connection", function()
    local c = connect()
    c:del("conc")
    local futures = {}
    for i = 1, 20 do futures[i] = c.incr.future(c, "conc") end
    local seen = {}
    for i = 1, 20 do seen[futures[i]:result()] = true end
    for i = 1, 20 do assert.is_true(seen[i]) end
    assert.are.equal("20", c:get("conc"))
    c:close()
  end)

  it("closes a connection whose call was cancelled mid-request", function()
    local c, watcher = connect(), connect()
    local f = c.command.future(c, "BLPOP", "empty list", "30")
    assert.is_true(util.wait_for(function() -- the server got it
      return watcher:command("CLIENT", "LIST"):find("cmd=blpop") ~= nil
    end, 10))
    watcher:close()
    f:cancel()
    local ok, err = pcall(f.result, f, 10)
    assert.is_false(ok)
    assert.is_true(synchro.is_cancelled(err))
    -- its reply would come out of step: the connection was closed
    assert.is_true(c:is_closed())
    ok, err = pcall(c.get, c, "k")
    assert.is_false(ok)
    assert.matches("^redis: connection is closed", err)
  end)

  local function fds()
    local n = 0
    for _ in io.popen("ls /proc/" .. util.pid() .. "/fd"):lines() do
      n = n + 1
    end
    return n
  end

  local function clients(c)
    local list = c:command("CLIENT", "LIST")
    local n = 0
    for _ in list:gmatch("[^\n]+") do n = n + 1 end
    return n
  end

  it("subscribes on a connection of its own, as a generator", function()
    local c = connect()
    local before = clients(c)
    local _, cleanups = redis.stats()
    local done = publish.future(port, "news", { "one", "two", "three" })
    local got = {}
    local it = c:subscribe("news")
    for channel, message in it do
      got[#got + 1] = channel .. ":" .. message
      -- the main connection stays usable meanwhile
      assert.are.equal("PONG", c:command("PING"))
      if #got == 3 then break end
    end
    it:close()
    done:result()
    assert.are.same({ "news:one", "news:two", "news:three" }, got)
    local subs, cleanups2 = redis.stats()
    assert.are.equal(0, subs)
    assert.are.equal(cleanups + 1, cleanups2)
    assert.is_true(util.wait_for(function()
      return c:command("PUBSUB", "NUMSUB", "news")[2] == 0
        and clients(c) == before
    end, 10))
    c:close()
  end)

  it("cleans up once when the consumer stops after 2 of 3", function()
    local c = connect()
    local before, fds_before = clients(c), fds()
    local _, cleanups = redis.stats()
    local done = publish.future(port, "stop", { "a", "b", "c" })
    local it = c:subscribe("stop")
    assert.are.same({ "stop", "a" }, { it() })
    assert.are.same({ "stop", "b" }, { it() })
    assert.are.equal(1, (redis.stats()))
    it:close()
    it:close() -- idempotent
    done:result()
    local subs, cleanups2 = redis.stats()
    assert.are.equal(0, subs)
    assert.are.equal(cleanups + 1, cleanups2)
    assert.are.equal(0, c:command("PUBSUB", "NUMSUB", "stop")[2])
    assert.is_true(util.wait_for(function()
      return clients(c) == before
    end, 10), "the subscription connection is still open")
    c:close()
    -- regression (make test-loaded, LuaJIT): the future and the iterator
    -- may still hold a pollfd that only their collection closes; a leak
    -- is an fd that stays after they are collected
    done, it = nil, nil -- luacheck: ignore
    assert.is_true(util.wait_for(function()
      collectgarbage()
      collectgarbage()
      return fds() <= fds_before
    end, 10), "file descriptors leaked")
  end)

  it("closes the subscription when a 5.4 for loop is left", function()
    if not util.lua54 then
      pending("closing an iterator by leaving a for loop needs Lua 5.4")
      return
    end
    local c = connect()
    local _, cleanups = redis.stats()
    local done = publish.future(port, "brk", { "x", "y", "z" })
    local n = 0
    for _ in c:subscribe("brk") do
      n = n + 1
      if n == 2 then break end
    end
    done:result()
    local subs, cleanups2 = redis.stats()
    assert.are.equal(0, subs)
    assert.are.equal(cleanups + 1, cleanups2)
    assert.are.equal(0, c:command("PUBSUB", "NUMSUB", "brk")[2])
    c:close()
  end)

  it("closes the connection with synchro.with", function()
    local kept
    local r = synchro.with(connect(), function(c)
      kept = c
      return c:command("ECHO", "hi")
    end)
    assert.are.equal("hi", r)
    assert.is_true(kept:is_closed())
    local ok, err = pcall(kept.get, kept, "k")
    assert.is_false(ok)
    assert.matches("^redis: connection is closed", err)
    -- also when the function raises
    ok = pcall(synchro.with, connect(), function(c)
      kept = c
      c:command("GET")
    end)
    assert.is_false(ok)
    assert.is_true(kept:is_closed())
  end)

  it("closes a <close> connection on Lua 5.4", function()
    if not util.lua54 then
      pending("to-be-closed variables need Lua 5.4")
      return
    end
    local run = assert(load([[
      local redis, port = ...
      local kept
      do
        local c <close> = assert(redis.connect("127.0.0.1", port))
        kept = c
        c:set("tbc", "1")
      end
      return kept
    ]]))
    local kept = run(redis, port)
    assert.is_true(kept:is_closed())
    local c = connect()
    assert.are.equal("1", c:get("tbc"))
    c:close()
  end)

  -- redis-server here is built with TLS: the example's tls= option
  -- against its --tls-port, with a CA this spec makes
  local tls_it = require("synchro.core").tls_session and it or pending
  tls_it("talks TLS to a --tls-port, verifying the server", function()
    local certs = require "spec.helpers.tls"
    local dir = certs.certs()
    local tport = free_port()
    local pidfile = dir .. "/redis.pid"
    os.execute(("(redis-server --port 0 --tls-port %d --bind 127.0.0.1 " ..
      "--tls-cert-file %s/server.pem --tls-key-file %s/server.key " ..
      "--tls-ca-cert-file %s/ca.pem --tls-auth-clients no --save '' " ..
      "--appendonly no >%s/tls.log 2>&1 & echo $! >%s)"):format(tport, dir,
        dir, dir, dir, pidfile))
    local tls = { cafile = dir .. "/ca.pem", servername = "localhost" }
    local ok = util.wait_for(function()
      local c = redis.connect("127.0.0.1", tport, { tls = tls })
      if c then c:close() end
      return c ~= nil
    end, 10)
    local results = {}
    if ok then
      local c = assert(redis.connect("127.0.0.1", tport, { tls = tls }))
      results[1] = c:set("tls:k", "over tls")
      results[2] = c:get("tls:k")
      c:close()
      local bad = { redis.connect("127.0.0.1", tport,
        { tls = { cafile = dir .. "/otherca.pem" } }) }
      results[3] = bad[3]
    end
    os.execute("kill $(cat " .. pidfile .. ") 2>/dev/null")
    local log = util.read(dir .. "/tls.log")
    certs.remove(dir)
    assert.is_true(ok, "redis-server with TLS did not start: " ..
      tostring(log))
    assert.same({ "OK", "over tls", "ECERT" }, results)
    assert.has_error(function()
      redis.connect("127.0.0.1", tport, { tsl = true })
    end)
  end)

  it("runs the demo script", function()
    local h = util.spawn_lua(
      ("arg = { [0] = 'examples/redis/demo.lua', '%d' }\n" ..
        "dofile('examples/redis/demo.lua')\n"):format(port))
    local code = util.wait_exit(h, 60)
    local out, err = util.read(h.out), util.read(h.err)
    util.cleanup(h)
    assert.are.equal(0, code, err)
    assert.are.equal(table.concat({
      "set\tOK", "get\thello", "incr\t1\t2", "missing\tnil",
      "pipeline\t100\t3\t102",
      "error\tfalse\tERR value is not an integer or out of range",
      "with\tPONG",
      "received\tdemo:news\tmessage 1", "received\tdemo:news\tmessage 2",
      "received\tdemo:news\tmessage 3", "still usable\thello", "" }, "\n"),
      out)
  end)
end)
