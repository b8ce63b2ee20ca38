-- Objects and modules cross as proxies; context managers close remotely.
local synchro = require "synchro"
local util = require "spec.helpers.util"

describe("objects and modules", function()
  local S, lib
  setup(function()
    -- the loop VM gets the creator's path: it finds the fixtures too
    package.path = "spec/fixtures/?.lua;" .. package.path
    S = synchro.new({ name = "objects" })
    lib = S:wrap_module("objlib.impl")
  end)
  teardown(function() S:close() end)

  it("wraps a module: data copied, functions wrapped", function()
    assert.are.equal("1.0", lib.version)
    assert.are.same({ retries = 3 }, lib.config)
    assert.is_true(synchro.is_proxy(lib.new))
    assert.is_false(synchro.is_proxy(lib.config))
    local c = lib.new(10)
    assert.is_true(synchro.is_proxy(c))
    assert.are.equal(30, lib.triple(10)) -- nowrap: runs here
    assert.is_false(synchro.is_proxy(lib.triple))
    assert.has_error(function() S:wrap_module(42) end,
      "bad argument #1 to 'wrap_module' (string expected, got number)")
    local ok, err = pcall(S.wrap_module, S, "no.such.module")
    assert.is_false(ok)
    assert.matches("no.such.module", err, 1, true)
  end)

  it("calls methods blocking, with .aio and with .future", function()
    local c = lib.new(10)
    assert.are.equal(15, c:incr(5))
    assert.are.equal(16, c:incr())
    assert.are.equal(16, c.value) -- fields are read remotely
    assert.are.equal("ctr", c.name)
    local a, b = synchro.run(function()
      return c.aio:incr(100), c.incr.aio(c, 1)
    end)
    assert.are.equal(116, a)
    assert.are.equal(117, b)
    assert.are.equal(127, c.incr.future(c, 10):result())
    c.value = 1 -- and written remotely
    assert.are.equal(1, c.value)
    local ok, err = pcall(c.fail, c)
    assert.is_false(ok)
    assert.matches("^counter failed", err)
  end)

  it("keeps identity: one proxy per object, and it comes back as itself",
    function()
      local c = lib.new(1)
      local data = lib.tangle()
      assert.is_true(lib.same(c, c))
      assert.is_false(lib.same(c, lib.new(1)))
      assert.are.equal(1, lib.value_of(c))
      -- an object inside plain data, holding that data in turn
      assert.are.equal("data", data.label)
      assert.is_true(synchro.is_proxy(data.obj))
      assert.are.equal("tangled", data.obj.name)
      local back = data.obj.data -- read remotely: a copy of the data...
      assert.are.equal("data", back.label)
      assert.are.equal(data.obj, back.obj) -- ...whose object is the same proxy
    end)

  it("iterates generators that the module marked", function()
    local sum = 0
    for i in lib.ticks(4) do sum = sum + i end
    assert.are.equal(10, sum)
  end)

  it("closes with synchro.with on every Lua, also on error", function()
    lib.take_log()
    local r1, r2 = synchro.with(lib.new(0, "a"), function(c)
      return c:incr(2), "done"
    end)
    assert.are.equal(2, r1)
    assert.are.equal("done", r2)
    local ok, err = pcall(synchro.with, lib.new(0, "b"), function(c)
      c:fail()
    end)
    assert.is_false(ok)
    assert.matches("^counter failed", err)
    synchro.with(lib.guard("outer"), function()
      synchro.with(lib.guard("inner"), function() end)
    end)
    local log, closes = lib.take_log()
    assert.are.same({ "close a", "close b", "__close inner", "__close outer" },
      log)
    assert.are.equal(4, closes)
    assert.has_error(function() synchro.with({}, 5) end)
  end)

  it("closes a <close> proxy once on Lua 5.4", function()
    if not util.lua54 then
      pending("to-be-closed variables need Lua 5.4")
      return
    end
    lib.take_log()
    local run = load([[
      local lib = ...
      do
        local g <close> = lib.guard("tbc")
        local c <close> = lib.new(0, "ctr")
      end
    ]])
    run(lib)
    local log = lib.take_log()
    assert.are.same({ "close ctr", "__close tbc" }, log)
  end)

  it("releases objects when their proxies are collected", function()
    collectgarbage()
    collectgarbage()
    util.wait_for(function() return true end, 0)
    local before = lib.live()
    for _ = 1, 2000 do lib.new(1) end
    collectgarbage()
    collectgarbage()
    assert.is_true(util.wait_for(function()
      return lib.live() <= before
    end, 10), "objects left on the loop: " .. lib.live())
  end)

  it("keeps memory flat over 100k proxies created and dropped", function()
    collectgarbage()
    collectgarbage()
    local before = lib.live()
    local before_here = synchro._proxy_count()
    for _ = 1, 100 do
      for _ = 1, 1000 do lib.new(1) end
      collectgarbage("step", 200)
    end
    collectgarbage()
    collectgarbage()
    assert.is_true(util.wait_for(function()
      return lib.live() <= before
    end, 20), "objects left on the loop: " .. lib.live())
    -- and here: the proxies are gone from the cache too
    assert.is_true(synchro._proxy_count() <= before_here,
      "proxies left here: " .. synchro._proxy_count())
  end)

  it("gives a clear error when a proxy outlives its synchronizer", function()
    local S2 = synchro.new({ name = "short-lived" })
    local lib2 = S2:wrap_module("objlib.impl")
    local c = lib2.new(1)
    S2:close()
    local ok, err = pcall(function() return c:incr() end)
    assert.is_false(ok)
    assert.matches("synchronizer 'short-lived' is closed", err, 1, true)
  end)
end)
