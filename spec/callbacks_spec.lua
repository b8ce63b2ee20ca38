-- Callbacks: functions passed to a blocking call run back in the caller's
-- VM while it waits.
local synchro = require "synchro"
local util = require "spec.helpers.util"

describe("callbacks", function()
  local S, each
  setup(function()
    S = synchro.new({ name = "callbacks" })
    each = S:wrap(function(list, fn)
      local aio = require "synchro.aio"
      local out = {}
      for i, v in ipairs(list) do
        aio.sleep(0.001) -- the task waits between callbacks
        out[i] = fn(v, i)
      end
      return out
    end)
  end)
  teardown(function() S:close() end)

  it("runs a function argument back in the caller's VM", function()
    local seen = {}
    local r = each({ 10, 20, 30 }, function(v, i)
      seen[#seen + 1] = i -- runs here: it can touch our locals
      return v + i
    end)
    assert.are.same({ 11, 22, 33 }, r)
    assert.are.same({ 1, 2, 3 }, seen)
  end)

  it("raises a callback's error in the async caller", function()
    local caught = S:wrap(function(fn)
      local ok, err = pcall(fn)
      return ok, err
    end)
    local ok, err = caught(function() error("callback failed", 0) end)
    assert.is_false(ok)
    assert.are.equal("callback failed", err)
    -- uncaught there, it comes back to the caller
    local ok2, err2 = pcall(each, { 1 }, function() error("boom", 0) end)
    assert.is_false(ok2)
    assert.matches("^boom", err2)
  end)

  it("gives a clear error when called after the caller returned", function()
    local keep = S:wrap(function(fn) kept = fn return fn(1) end) -- luacheck: ignore
    local later = S:wrap(function() return pcall(kept, 2) end) -- luacheck: ignore
    assert.are.equal(5, keep(function(x) return x * 5 end))
    local ok, err = later()
    assert.is_false(ok)
    assert.matches("callback called after the call that passed it returned",
      err, 1, true)
  end)

  it("nests: a callback may make blocking calls with callbacks", function()
    local r = each({ 1, 2 }, function(v)
      return each({ v }, function(w) return w * 100 end)[1]
    end)
    assert.are.same({ 100, 200 }, r)
  end)

  it("reverses translation: loop objects reach callbacks as proxies",
    function()
      local with_obj = S:wrap(function(fn)
        local obj = setmetatable({ n = 41 }, {
          __index = { bump = function(self) self.n = self.n + 1 return self.n end },
        })
        local back = fn(obj)
        return rawequal(back, obj), obj.n
      end)
      local same, n = with_obj(function(proxy)
        assert(synchro.is_proxy(proxy))
        proxy:bump() -- a call into the loop from inside the callback
        return proxy -- goes back as the object itself
      end)
      assert.is_true(same)
      assert.are.equal(42, n)
    end)

  it("runs callbacks under synchro.run, where they may await", function()
    local slow = S:wrap(function(x)
      require("synchro.aio").sleep(0.01)
      return x
    end)
    local a, b, ok, err = synchro.run(function()
      local r = each({ 1, 2 }, function(v) return slow.aio(v) * 10 end)
      local r2 = each.aio({ 5 }, function(v) return v + 1 end)
      -- (PUC 5.1's own pcall cannot yield: use the yield-safe one there)
      local pc = util.puc51 and require("synchro.sched").yieldable_pcalls()
        or pcall
      local ok_, err_ = pc(each, { 1 }, function() error("inside run", 0) end)
      return r[1] + r[2], r2[1], ok_, err_
    end)
    assert.are.equal(30, a)
    assert.are.equal(6, b)
    assert.is_false(ok)
    assert.matches("^inside run", err)
  end)

  it("a module function's .aio passes callbacks inside synchro.run " ..
    "(regression: the proxy's .aio refused them as if in .future)",
    function()
      local saved = package.path
      package.path = "spec/fixtures/?.lua;" .. package.path
      local S2 = synchro.new({ name = "callbacks-module" })
      package.path = saved
      local lib = S2:wrap_module("objlib.impl")
      local a, b = synchro.run(function()
        local r = lib.map.aio({ 1, 2 }, function(v) return v * 10 end)
        local r2 = lib.map({ 3 }, function(v) return v + 1 end) -- awaits
        return r[1] + r[2], r2[1]
      end)
      assert.are.equal(30, a)
      assert.are.equal(4, b)
      S2:close()
    end)

  it("refuses callbacks in .future calls", function()
    assert.has_error(function() each.future({ 1 }, print) end)
    local ok, err = pcall(each.future, { 1 }, function() end)
    assert.is_false(ok)
    assert.matches("but not to .future", err, 1, true)
  end)
end)
