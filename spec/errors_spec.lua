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
    assert.are.equal("table", type(err)) -- copied without its metatable
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
