-- Calls between synchronizers: a task awaits another synchronizer's
-- function (it never blocks its own loop), and calls that go back and
-- forth between two loops do not deadlock.
local synchro = require "synchro"

describe("calls between synchronizers", function()
  local S1, S2
  setup(function()
    S1 = synchro.new({ name = "one" })
    S2 = synchro.new({ name = "two" })
  end)
  teardown(function()
    S1:close()
    S2:close()
  end)

  it("awaits another synchronizer's functions from a task", function()
    local inner = S2:wrap(function(x)
      require("synchro.aio").sleep(0.2)
      return x * 2
    end)
    local outer = S1:wrap(function(x)
      local aio = require "synchro.aio"
      local t0 = aio.now()
      local ticks = 0
      local ticker = aio.spawn(function()
        while true do aio.sleep(0.01); ticks = ticks + 1 end
      end)
      -- three calls at once: a plain call, .aio and a future
      local a, b, c = aio.gather(function() return inner(x) end,
        function() return inner.aio(x + 1) end, inner.future(x + 2))
      ticker:cancel()
      return a, b, c, aio.now() - t0, ticks
    end)
    local a, b, c, dt, ticks = outer(5)
    assert.are.same({ 10, 12, 14 }, { a, b, c })
    assert.is_true(dt < 0.6, "the calls did not overlap: " .. dt)
    assert.is_true(ticks >= 5, "the loop was blocked: " .. ticks)
  end)

  it("goes back and forth between two loops without deadlock", function()
    local back = S1:wrap(function(x) return x + 1 end)
    local ping = S2:wrap(function(x) return back(x) * 10 end)
    local pong = S1:wrap(function(x) return ping(x) + 1 end)
    assert.are.equal(421, pong(41))
  end)

  it("raises the other synchronizer's errors in the task", function()
    local fail = S2:wrap(function() error("from two", 0) end)
    local catch = S1:wrap(function()
      local ok, err = pcall(fail)
      return ok, err
    end)
    local ok, err = catch()
    assert.is_false(ok)
    assert.matches("^from two", err)
  end)
end)
