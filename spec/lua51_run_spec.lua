-- Inside synchro.run on every Lua, PUC 5.1 included: proxy fields,
-- synchro.with and a user pcall around an await work. Started from the
-- failing cases on 5.1: `attempt to yield across metamethod/C-call
-- boundary` for each. What 5.1 still cannot do is listed in the guide
-- (Lua versions) and has a pending test here.
local synchro = require "synchro"
local util = require "spec.helpers.util"

describe("async code inside synchro.run", function()
  local S, lib, slow, fail
  setup(function()
    package.path = "spec/fixtures/?.lua;" .. package.path
    S = synchro.new({ name = "run51" })
    lib = S:wrap_module("objlib.impl")
    slow = S:wrap(function(x)
      require("synchro.aio").sleep(0.01)
      return x
    end)
    fail = S:wrap(function(msg)
      require("synchro.aio").sleep(0.01)
      error(msg, 0)
    end)
  end)
  teardown(function() S:close() end)

  it("reads and writes proxy fields and calls methods", function()
    local c = lib.new(10)
    local r = synchro.run(function()
      local before = c.value
      c.value = 20
      return { before, c.value, c.name, c:incr(1), c.aio:incr(1) }
    end)
    assert.are.same({ 10, 20, "ctr", 21, 22 }, r)
  end)

  it("runs synchro.with around a body that awaits", function()
    lib.take_log()
    local v = synchro.run(function()
      return synchro.with(lib.new(0, "w"), function(c)
        return slow.aio(c:incr(5) * 2)
      end)
    end)
    assert.are.equal(10, v)
    assert.are.same({ "close w" }, (lib.take_log()))
  end)

  it("lets a user pcall and xpcall wrap an await", function()
    local plain_pcall, plain_xpcall = pcall, xpcall
    local r = synchro.run(function()
      local ok1, v1 = pcall(slow.aio, "fine")
      local ok2, e2 = pcall(fail.aio, "bad")
      local ok3, e3 = xpcall(function() return fail.aio("worse") end,
        function(e) return "handled: " .. tostring(e):match("^[^\n]*") end)
      local ok4, e4 = pcall(function()
        local a = slow.aio(1)
        local ok, e = pcall(fail.aio, "nested")
        return a, ok, tostring(e):match("^[^\n]*")
      end)
      return { ok1, v1, ok2, tostring(e2):match("^[^\n]*"), ok3, e3, ok4, e4 }
    end)
    assert.are.same({ true, "fine", false, "bad", false, "handled: worse",
      true, 1 }, r)
    -- outside synchro.run, the plain ones are back
    assert.are.equal(plain_pcall, pcall)
    assert.are.equal(plain_xpcall, xpcall)
  end)

  it("cancels a task waiting inside a user pcall", function()
    local r = synchro.run(function()
      local t = synchro.spawn(function()
        assert(pcall(slow.aio, 0)) -- fine
        local ok, err = pcall(function() synchro.aio.sleep(math.huge) end)
        return ok, synchro.is_cancelled(err)
      end)
      synchro.aio.sleep(0.02)
      t:cancel()
      return { t:join() }
    end)
    assert.are.same({ false, true }, r)
  end)

  describe("limits of PUC 5.1", function()
    local function only51()
      if not util.puc51 then return false end
      return true
    end

    it("cannot yield inside a for iterator (step by hand there)", function()
      if only51() then
        pending("PUC 5.1 cannot yield across a for iterator's call")
        return
      end
      local g = S:wrap_generator(function()
        for i = 1, 3 do synchro.emit(i) end
      end)
      assert.are.equal(6, synchro.run(function()
        local s = 0
        for v in g.aio() do s = s + v end
        return s
      end))
    end)

    it("cannot await inside the user's own metamethods", function()
      if only51() then
        pending("PUC 5.1 cannot yield across a metamethod")
        return
      end
      local t = setmetatable({}, { __index = function(_, k)
        return slow.aio(k)
      end })
      assert.are.equal("key", synchro.run(function() return t.key end))
    end)

    it("cannot yield through a pcall captured before synchro.run", function()
      if only51() then
        pending("a pcall kept in a local before synchro.run is the plain one")
        return
      end
      local captured = pcall
      local ok, v = synchro.run(function()
        return captured(slow.aio, "through")
      end)
      assert.is_true(ok)
      assert.are.equal("through", v)
    end)
  end)
end)
