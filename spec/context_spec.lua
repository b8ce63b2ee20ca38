-- Two-way context managers: the exit gets the body's error and may
-- suppress it, enter's results go to the body, synchro.contextmanager
-- raises the body's error inside the generator. Started from the failing
-- cases: the remote close got nil instead of the body's error, there was
-- no enter value, and a generator used as a context manager saw
-- `ECANCELED: task cancelled` instead of the body's error.
local synchro = require "synchro"
local util = require "spec.helpers.util"
local redis_server = require "spec.helpers.redis"

describe("context managers", function()
  local S, cm, take
  setup(function()
    S = synchro.new({ name = "context" })
    -- an async module of context managers, defined inline
    S:wrap(function()
      package.loaded["cm.impl"] = (function()
        local aio = require "synchro.aio"
        local M, events = {}, {}
        local function note(s) events[#events + 1] = s end
        local function text(err)
          if err == nil then return "nil" end
          if synchro.aio.is_cancelled(err) then return "cancelled" end
          return tostring(err):match("^[^\n]*")
        end
        -- with __enter/__exit: enter gives two values; exit suppresses
        -- errors that start with "ignore"
        local Tx = {}
        Tx.__index = Tx
        function Tx.__enter(self)
          aio.sleep(0.001)
          if self.name == "bad enter" then error("enter failed", 0) end
          note("enter " .. self.name)
          return "value of " .. self.name, 42
        end
        function Tx.__exit(self, err)
          aio.sleep(0.001)
          note("exit " .. self.name .. " " .. text(err))
          if self.name == "bad exit" then error("exit failed", 0) end
          return err ~= nil and tostring(err):find("^ignore") ~= nil
        end
        function M.tx(name) return setmetatable({ name = name }, Tx) end
        -- a plain close(err), whose result never suppresses
        local Res = {}
        Res.__index = Res
        function Res.close(_, err)
          note("close " .. text(err))
          return true
        end
        function M.res() return setmetatable({}, Res) end
        -- a <close>-style __close(err)
        local Guard = {}
        function Guard.__close(_, err) note("__close " .. text(err)) end
        function M.guard() return setmetatable({}, Guard) end
        M.scope = synchro.generator(function(name)
          note("begin " .. name)
          local ok, err = pcall(synchro.emit, "inside " .. name)
          note((ok and "commit " or "rollback ") .. name .. " " ..
            (ok and "nil" or text(err)))
          if not ok and tostring(err):find("^ignore") then return end
          if not ok then error(err, 0) end
        end)
        function M.take()
          local e = events
          events = {}
          return e
        end
        return M
      end)()
    end)()
    cm = S:wrap_module("cm.impl")
    take = cm.take
  end)
  teardown(function() S:close() end)
  before_each(function() take() end)

  it("passes enter's results to the body and the body's error to exit",
    function()
      local a, b = synchro.with(cm.tx("t1"), function(v, n)
        return v, n
      end)
      assert.are.equal("value of t1", a)
      assert.are.equal(42, b)
      local ok, err = pcall(synchro.with, cm.tx("t2"), function()
        error("body failed", 0)
      end)
      assert.is_false(ok)
      assert.are.equal("body failed", err)
      assert.are.same({ "enter t1", "exit t1 nil", "enter t2",
        "exit t2 body failed" }, take())
    end)

  it("lets exit suppress the error by returning true", function()
    local r = { synchro.with(cm.tx("t3"), function()
      error("ignore me", 0)
    end) }
    assert.are.same({}, r) -- suppressed: nothing returned, nothing raised
    assert.are.same({ "enter t3", "exit t3 ignore me" }, take())
    -- a close method gets the error but cannot suppress it
    local ok, err = pcall(synchro.with, cm.res(), function(x)
      assert.is_true(synchro.is_proxy(x)) -- no enter: the object itself
      error("ignore this too", 0)
    end)
    assert.is_false(ok)
    assert.are.equal("ignore this too", err)
    assert.are.same({ "close ignore this too" }, take())
  end)

  it("works the same with local objects", function()
    local seen = {}
    local obj = setmetatable({}, { __index = {
      enter = function() return "entered" end,
      exit = function(_, err)
        seen[#seen + 1] = tostring(err)
        return err == "swallow"
      end,
    } })
    assert.are.equal("entered:1", synchro.with(obj, function(v)
      return v .. ":1"
    end))
    assert.is_nil(synchro.with(obj, function() error("swallow", 0) end))
    assert.are.same({ "nil", "swallow" }, seen)
  end)

  it("gives <close> the error on Lua 5.4", function()
    if not util.lua54 then
      pending("to-be-closed variables need Lua 5.4")
      return
    end
    local run = load([[
      local cm = ...
      local ok = pcall(function()
        local g <close> = cm.guard()
        error("in the block", 0)
      end)
      do local g <close> = cm.guard() end
      return ok
    ]])
    assert.is_false(run(cm))
    assert.are.same({ "__close in the block", "__close nil" }, take())
  end)

  it("raises the body's error inside a contextmanager generator", function()
    local scope = synchro.contextmanager(cm.scope)
    assert.are.equal("inside a!", synchro.with(scope("a"), function(v)
      return v .. "!"
    end))
    local ok, err = pcall(synchro.with, scope("b"), function()
      error("broken", 0)
    end)
    assert.is_false(ok)
    assert.are.equal("broken", err) -- the body's own error goes on
    assert.is_nil(synchro.with(scope("c"), function()
      error("ignore it", 0) -- the generator handles it: suppressed
    end))
    assert.are.same({ "begin a", "commit a nil", "begin b",
      "rollback b broken", "begin c", "rollback c ignore it" }, take())
    -- a wrapped generator works too, and misuse is clear
    local twice = synchro.contextmanager(S:wrap_generator(function()
      synchro.emit(1)
      synchro.emit(2)
    end))
    ok, err = pcall(synchro.with, twice(), function() end)
    assert.is_false(ok)
    assert.matches("emitted more than once", err, 1, true)
    local never = synchro.contextmanager(S:wrap_generator(function() end))
    ok, err = pcall(synchro.with, never(), function() end)
    assert.is_false(ok)
    assert.matches("ended without emitting", err, 1, true)
    local once = twice()
    pcall(synchro.with, once, function() end)
    ok, err = pcall(synchro.with, once, function() end)
    assert.is_false(ok)
    assert.matches("entered once", err, 1, true)
    assert.has_error(function() synchro.contextmanager(42) end,
      "bad argument #1 to 'contextmanager' (wrapped generator expected, " ..
      "got number)")
    assert.has_error(function() synchro.with({}, 5) end,
      "bad argument #2 to 'with' (function expected, got number)")
  end)

  it("raises an exit's error, and runs no exit when enter fails",
    function()
      local ran = false
      local ok, err = pcall(synchro.with, cm.tx("bad enter"), function()
        ran = true
      end)
      assert.is_false(ok)
      assert.matches("^enter failed", err)
      assert.is_false(ran)
      assert.are.same({}, take())
      ok, err = pcall(synchro.with, cm.tx("bad exit"), function()
        error("body", 0)
      end)
      assert.is_false(ok)
      assert.matches("^exit failed", err)
      assert.are.same({ "enter bad exit", "exit bad exit body" }, take())
    end)

  it("runs exit with the cancellation when the body is cancelled",
    function()
      -- on the loop: a task cancelled in a body that waits forever
      local hang = S:wrap(function()
        local impl = require "cm.impl"
        synchro.with(impl.tx("hang"), function()
          require("synchro.aio").sleep(math.huge)
        end)
      end)
      local fut = hang.future()
      assert.is_false(fut:wait(0.1))
      fut:cancel()
      local ok, err = pcall(fut.result, fut)
      assert.is_false(ok)
      assert.is_true(synchro.is_cancelled(err))
      assert.are.same({ "enter hang", "exit hang cancelled" }, take())
      -- and inside synchro.run, with a proxy and with a contextmanager
      local scope = synchro.contextmanager(cm.scope)
      synchro.run(function()
        local t = synchro.spawn(function()
          synchro.with(cm.tx("run"), function()
            synchro.with(scope("inner"), function()
              synchro.aio.sleep(math.huge)
            end)
          end)
        end)
        synchro.aio.sleep(0.05)
        t:cancel()
        local tok, terr = pcall(t.join, t)
        assert(not tok and synchro.is_cancelled(terr), tostring(terr))
      end)
      assert.are.same({ "enter run", "begin inner",
        "rollback inner cancelled", "exit run cancelled" }, take())
    end)

  it("enters and exits 50 context managers at once from one scheduler",
    function()
      local scope = synchro.contextmanager(cm.scope)
      local r = synchro.run(function()
        local fns = {}
        for i = 1, 50 do
          fns[i] = function()
            return synchro.with(cm.tx("c" .. i), function(v)
              return synchro.with(scope("s" .. i), function(w)
                synchro.aio.sleep(0.001 * (i % 5))
                return v .. "/" .. w
              end)
            end)
          end
        end
        return { synchro.gather((table.unpack or unpack)(fns)) }
      end)
      assert.are.equal(50, #r)
      assert.are.equal("value of c7/inside s7", r[7])
      local events = take()
      assert.are.equal(50 * 4, #events)
    end)

  it("fails clearly when the object's synchronizer closed", function()
    local S2 = synchro.new({ name = "gone" })
    S2:wrap(function()
      package.loaded["cm2"] = { new = function()
        return setmetatable({}, { __close = function() end })
      end }
    end)()
    local obj = S2:wrap_module("cm2").new()
    S2:close()
    local ok, err = pcall(synchro.with, obj, function() return 1 end)
    assert.is_false(ok)
    assert.matches("synchronizer 'gone' is closed", err, 1, true)
  end)
end)

describe("a transaction context manager on a real redis-server", function()
  package.path = "examples/redis/?.lua;examples/redis/?/init.lua;" ..
    package.path
  local redis, server, port
  local function sh(cmd)
    local p = io.popen(cmd)
    local out = p:read("*a")
    p:close()
    return out
  end

  setup(function()
    assert(sh("command -v redis-server") ~= "",
      "redis-server is not installed (tools/deps.sh installs it)")
    redis = require "redis_async"
    local S = synchro.new({ name = "port-probe" })
    port = S:wrap(function()
      local probe = assert(require("synchro.aio").tcp.listen("127.0.0.1", 0))
      local p = probe:port()
      probe:close()
      return p
    end)()
    S:close()
    server = redis_server.start(port, redis.connect)
  end)

  teardown(function()
    redis_server.stop(server)
  end)

  it("commits on success and rolls back on a raised error", function()
    local c = assert(redis.connect("127.0.0.1", port))
    local check = assert(redis.connect("127.0.0.1", port))
    c:del("tx:a", "tx:b")
    local transaction = synchro.contextmanager(c.transaction)
    synchro.with(transaction(c), function(tx)
      assert.are.equal(c, tx)
      assert.are.equal("QUEUED", tx:set("tx:a", "1"))
      assert.are.equal("QUEUED", tx:incr("tx:b"))
      assert.is_nil(check:get("tx:a")) -- not yet: queued by the server
    end)
    assert.are.equal("1", check:get("tx:a"))
    assert.are.equal("1", check:get("tx:b"))
    assert.are.same({ "OK", 1, n = 2 }, c.replies)
    local ok, err = pcall(synchro.with, transaction(c), function(tx)
      tx:set("tx:a", "2")
      tx:incr("tx:b")
      error("abort the transfer", 0)
    end)
    assert.is_false(ok)
    assert.are.equal("abort the transfer", err)
    assert.are.equal("1", check:get("tx:a")) -- rolled back: DISCARD
    assert.are.equal("1", check:get("tx:b"))
    assert.are.equal("PONG", c:command("PING")) -- not left inside MULTI
    -- the same from async code
    synchro.run(function()
      synchro.with(transaction(c), function(tx) tx:incr("tx:b") end)
    end)
    assert.are.equal("2", check:get("tx:b"))
    c:close()
    check:close()
  end)
end)
