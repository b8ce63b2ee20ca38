-- Errors crossing back, timeouts.
local synchro = require "synchro"

describe("errors", function()
  local S
  setup(function() S = synchro.new({ name = "errors-spec" }) end)
  teardown(function() S:close() end)

  it("re-raises a string error with its text and the remote frames",
    function()
      local f = S:wrap(function()
        local function inner() error("boom") end
        inner()
      end)
      local ok, err = pcall(f)
      assert.is_false(ok)
      assert.matches("^.-errors_spec.lua:%d+: boom\n", err)
      assert.matches("[loop thread] stack traceback:", err, 1, true)
      assert.matches("in %a* ?'?inner'?", err)
    end)

  it("keeps a string error raised with level 0 unchanged at its start",
    function()
      local f = S:wrap(function() error("plain", 0) end)
      local ok, err = pcall(f)
      assert.is_false(ok)
      assert.are.equal("plain", err:match("^[^\n]*"))
    end)

  it("copies a table error and keeps its traceback aside", function()
    local f = S:wrap(function()
      error({ code = 42, msg = "bad", nested = { 1, 2 } })
    end)
    local ok, err = pcall(f)
    assert.is_false(ok)
    assert.are.equal("table", type(err))
    assert.are.equal(42, err.code)
    assert.are.equal("bad", err.msg)
    assert.are.same({ 1, 2 }, err.nested)
    assert.matches("[loop thread]", synchro.traceback(err), 1, true)
    assert.is_nil(synchro.traceback("not a table"))
  end)

  it("turns an error value that cannot cross into text", function()
    local f = S:wrap(function()
      error(setmetatable({}, { __tostring = function() return "custom" end }))
    end)
    local ok, err = pcall(f)
    assert.is_false(ok)
    -- a class the caller does not have: its remote tostring()
    assert.are.equal("string", type(err))
    assert.matches("^custom\n%[loop thread%] stack traceback:", err)
    local g = S:wrap(function() error(coroutine.create(function() end)) end)
    ok, err = pcall(g)
    assert.is_false(ok)
    assert.matches("^thread", err)
  end)

  it("gives the full traceback with SYNCHRO_TRACEBACK=full", function()
    -- the loop reads the variable when it starts; check the short form
    -- bounds the frames instead
    local f = S:wrap(function()
      local function rec(n) if n == 0 then error("deep") end rec(n - 1) end
      rec(20)
    end)
    local ok, err = pcall(f)
    assert.is_false(ok)
    local frames = select(2, err:gsub("\n\t", ""))
    assert.is_true(frames <= 8)
    assert.matches("more; SYNCHRO_TRACEBACK=full shows all", err, 1, true)
  end)

  it("returns nil, ETIMEDOUT, code when a wrap timeout expires", function()
    local cleaned = S:wrap(function() return timeout_cleanup end) -- luacheck: ignore
    local slow = S:wrap(function()
      local ok = pcall(require("synchro.aio").sleep, 10)
      timeout_cleanup = not ok -- luacheck: ignore
      require("synchro.aio").sleep(10) -- level-triggered: raises again
      return "never"
    end, { timeout = 0.1 })
    local t0 = require("synchro.core").now()
    local v, msg, code = slow()
    assert.is_true(require("synchro.core").now() - t0 < 2)
    assert.is_nil(v)
    assert.matches("^ETIMEDOUT: ", msg)
    assert.are.equal("ETIMEDOUT", code)
    assert.is_true(cleaned())
  end)

  it("returns the results when the call beats its timeout", function()
    local quick = S:wrap(function() return "fast" end, { timeout = 5 })
    assert.are.equal("fast", quick())
  end)
end)

-- Issue 10 item 6: errors are exact.
describe("cancellation errors", function()
  local S
  setup(function() S = synchro.new({ name = "errors-cancel" }) end)
  teardown(function() S:close() end)

  it("regression: a user's error mentioning ECANCELED is not a " ..
     "cancellation", function()
    local f = S:wrap(function() error("ECANCELED: mine", 0) end)
    local ok, err = pcall(f)
    assert.is_false(ok)
    assert.matches("^ECANCELED: mine", err)
    assert.is_false(synchro.is_cancelled(err))
    assert.is_false(synchro.is_cancelled("ECANCELED: mine"))
    assert.is_false(synchro.is_cancelled({ message = "ECANCELED: x" }))
    assert.is_false(synchro.is_cancelled(nil))
  end)

  it("regression: a closed stream's ECANCELED is not a cancellation",
    function()
      local f = S:wrap(function()
        local aio = require "synchro.aio"
        local server = assert(aio.tcp.listen("127.0.0.1", 0))
        local c = assert(aio.tcp.connect("127.0.0.1", server:port()))
        local s = assert(server:accept())
        local reader = aio.spawn(function() return { c:read() } end)
        aio.sleep(0.05)
        c:close()
        local r = reader:join()
        s:close()
        server:close()
        return r[1], r[2], r[3], aio.is_cancelled(r[2])
      end)
      local v, msg, code, remote = f()
      assert.is_nil(v)
      assert.are.equal("ECANCELED: operation canceled", msg)
      assert.are.equal("ECANCELED", code)
      assert.is_false(remote)
      assert.is_false(synchro.is_cancelled(msg))
    end)

  it("a cancelled call raises a cancellation that prints as before",
    function()
      local f = S:wrap(function() require("synchro.aio").sleep(10) end)
      local fut = f.future()
      fut:cancel()
      local ok, err = pcall(fut.result, fut)
      assert.is_false(ok)
      assert.is_true(synchro.is_cancelled(err))
      assert.are.equal("ECANCELED: the call was cancelled", tostring(err))
      assert.are.equal("x: ECANCELED: the call was cancelled", "x: " .. err)
    end)

  it("a task's own cancellation is one, on the loop and after crossing",
    function()
      local f = S:wrap(function()
        local aio = require "synchro.aio"
        local inside
        local t = aio.spawn(function()
          local ok, err = pcall(aio.sleep, 10)
          inside = not ok and aio.is_cancelled(err)
          error(err, 0)
        end)
        aio.sleep(0.01)
        t:cancel()
        local ok, err = pcall(t.join, t)
        -- aio.timeout cancels the task it runs: the task sees a
        -- cancellation
        local timed_out
        local v, msg = aio.timeout(0.02, function()
          local ok2, err2 = pcall(aio.sleep, 10)
          timed_out = not ok2 and aio.is_cancelled(err2)
          error(err2, 0)
        end)
        assert(v == nil and msg:match("^ETIMEDOUT"), msg)
        assert(err == aio.Cancelled and not ok)
        error({ inside = inside, joined = aio.is_cancelled(err),
          timed_out = timed_out, err = err }, 0)
      end)
      local ok, e = pcall(f)
      assert.is_false(ok)
      assert.is_true(e.inside)
      assert.is_true(e.joined)
      assert.is_true(e.timed_out)
      -- the loop's synchro.Cancelled crossed as a cancellation
      assert.is_true(synchro.is_cancelled(e.err))
      assert.are.equal("ECANCELED: task cancelled", tostring(e.err))
      assert.is_true(synchro.is_cancelled(synchro.Cancelled))
    end)

  it("a call pending when its synchronizer closes gets a cancellation",
    function()
      local S2 = synchro.new({ name = "errors-close", grace = 1 })
      local f = S2:wrap(function() require("synchro.aio").sleep(10) end)
      local fut = f.future()
      S2:close(0.5)
      local ok, err = pcall(fut.result, fut)
      assert.is_false(ok)
      assert.is_true(synchro.is_cancelled(err))
      assert.matches("^ECANCELED: ", tostring(err))
    end)
end)

describe("table errors of a class", function()
  local S
  local errclass = require "spec.fixtures.errclass"
  setup(function() S = synchro.new({ name = "errors-class" }) end)
  teardown(function() S:close() end)

  it("regression: a class the caller has arrives with its metatable",
    function()
      local f = S:wrap(function(what)
        error(require("spec.fixtures.errclass").not_found(what))
      end)
      local ok, e = pcall(f, "key")
      assert.is_false(ok)
      assert.are.equal(errclass.NotFound, getmetatable(e))
      assert.are.equal("key", e.what)
      assert.are.equal("not found: key", tostring(e))
      assert.are.equal("missing key", e:describe())
      assert.matches("[loop thread]", synchro.traceback(e), 1, true)
    end)

  it("a module table used as the class, and classes inside a table error",
    function()
      local f = S:wrap(function()
        local m = require "spec.fixtures.errclass"
        error({ cause = setmetatable({ code = 7 }, m),
          list = { m.not_found("a"), m.not_found("b") } })
      end)
      local ok, e = pcall(f)
      assert.is_false(ok)
      assert.are.equal(errclass, getmetatable(e.cause))
      assert.are.equal("errclass error 7", tostring(e.cause))
      assert.are.equal(errclass.NotFound, getmetatable(e.list[2]))
      assert.are.equal("not found: b", tostring(e.list[2]))
    end)

  it("a class only the loop VM has gives its remote tostring()", function()
    local f = S:wrap(function(plain)
      local m = require "spec.fixtures.errclass_remote"
      if plain then error(setmetatable({ n = 1 }, m.Plain)) end
      error(setmetatable({ n = 3 }, m.Remote))
    end)
    assert.is_nil(package.loaded["spec.fixtures.errclass_remote"])
    local ok, e = pcall(f)
    assert.is_false(ok)
    assert.matches("^remote class: 3\n%[loop thread%]", e)
    -- no class and no __tostring: the fields alone, as before
    ok, e = pcall(f, true)
    assert.is_false(ok)
    assert.are.same({ n = 1 }, e)
  end)

  it("a class error from a callback reaches the loop with its class",
    function()
      local f = S:wrap(function(cb)
        local ok, e = pcall(cb)
        local m = require "spec.fixtures.errclass"
        return ok, getmetatable(e) == m.NotFound, tostring(e)
      end)
      local ok, same, text = f(function() error(errclass.not_found("cb")) end)
      assert.is_false(ok)
      assert.is_true(same)
      assert.are.equal("not found: cb", text)
    end)
end)

describe("misuse errors", function()
  local aio = require "synchro.aio"
  local S
  setup(function() S = synchro.new({ name = "errors-misuse" }) end)
  teardown(function() S:close() end)

  local function message(fn, ...)
    local ok, err = pcall(fn, ...)
    assert.is_false(ok)
    return tostring(err)
  end

  it("regression: core.reply from async code cannot forge or repeat a " ..
     "reply (a key, not a pointer, names the call)", function()
      local T = synchro.new({ name = "errors-reply" })
      local forge = T:wrap(function()
        local core = require "synchro.core"
        local errs = {}
        for _, key in ipairs({ 0, -1, 1.5, 0 / 0, 2 ^ 40, 2 ^ 53, "x", {},
                               io.stdout, true }) do
          local ok, err = pcall(core.reply, key, true, "forged")
          errs[#errs + 1] = not ok and tostring(err):match("no call in " ..
            "progress") and "ok" or "reply went through"
        end
        return table.concat(errs, " ")
      end)
      assert.are.equal(("ok "):rep(9) .. "ok", forge())
      -- the first call of a fresh loop has the first key: replying to it
      -- from inside completes that call once; the runtime's own reply
      -- afterwards is refused and reported, and nothing breaks
      local U = synchro.new({ name = "errors-reply-own" })
      local own = U:wrap(function(key)
        local core = require "synchro.core"
        core.reply(key, true, "early")
        return "late"
      end)
      assert.are.equal("early", own(2 ^ 24 + 1))
      local echo = U:wrap(function(...) return ... end)
      assert.are.same({ 1, 2 }, { echo(1, 2) })
      U:close()
      T:close()
    end)

  it("regression: point at the user's line, not at synchro's files",
    function()
      local here = "^[^\n]*errors_spec%.lua:%d+: "
      assert.matches(here .. "bad argument #1 to 'new'",
        message(function() synchro.new(1) end))
      assert.matches(here .. "bad argument #1 to 'wrap'",
        message(function() S:wrap(1) end))
      assert.matches(here .. "bad argument #2 to 'with'",
        message(function() synchro.with({}) end))
      assert.matches(here .. "bad argument #1 to 'spawn'",
        message(synchro.run, function() aio.spawn(1) end))
      assert.matches(here .. "bad argument #1 to 'interval'",
        message(function() aio.interval(0 / 0) end))
      assert.matches(here .. "bad argument #2 to 'connect'",
        message(synchro.run, function() aio.tcp.connect("127.0.0.1", "x") end))
      -- inside a wrapped function, on the loop VM
      local f = S:wrap(function() require("synchro.aio").sleep("x") end)
      assert.matches(here .. "bad argument #1 to 'sleep'", message(f))
      assert.is_nil(message(f):match("^[^\n]*synchro/[%w_]+%.lua"))
    end)

  it("regression: the async-only error names the function and says what " ..
     "to use instead", function()
      local here = "^[^\n]*errors_spec%.lua:%d+: "
      local msg = message(function() aio.sleep(1) end)
      assert.matches(here .. "aio%.sleep must be called from async code " ..
        "%(a task of a Synchronizer or synchro%.run%); ", msg)
      assert.matches("synchro.run(fn)", msg, 1, true)
      assert.matches("S:wrap", msg, 1, true)
      assert.matches(here .. "aio%.gather must be called from async code",
        message(function() aio.gather(function() end) end))
      assert.matches(here .. "channel:recv must be called from async code",
        message(function() aio.channel():recv() end))
      assert.matches(here .. "aio%.tcp%.connect must be called from async",
        message(function() aio.tcp.connect("127.0.0.1", 1) end))
    end)
end)
