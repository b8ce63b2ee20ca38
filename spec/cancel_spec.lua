-- Cancellation, closing, process exit and Ctrl-C: cleanup always runs.
local synchro = require "synchro"
local util = require "spec.helpers.util"

local child_prelude = util.child_prelude

describe("cancellation and shutdown", function()
  it("cancels a task stuck in sleep(10) promptly, after its cleanup",
    function()
      local S = synchro.new({ name = "cancel" })
      local marker = util.tmpname()
      local work = S:wrap(function(path)
        local aio = require "synchro.aio"
        local ok, err = pcall(aio.sleep, 10)
        local f = io.open(path, "w")
        f:write(ok and "slept" or "cleanup: " .. tostring(err))
        f:close()
        error(err, 0)
      end)
      local f = work.future(marker)
      f:wait(0.05)
      local t0 = util.now()
      f:cancel()
      local ok, err = pcall(f.result, f)
      assert.is_true(util.now() - t0 < 2)
      assert.is_false(ok)
      assert.is_true(synchro.is_cancelled(err))
      assert.matches("^cleanup: ECANCELED", util.read(marker))
      os.remove(marker)
      S:close()
    end)

  it("runs to-be-closed variables of a cancelled task", function()
    if not util.lua54 then
      pending("to-be-closed variables need Lua 5.4")
      return
    end
    local S = synchro.new()
    local closed = S:wrap(function() return tbc_closed end) -- luacheck: ignore
    local work = S:wrap(load([[
      local aio = require "synchro.aio"
      local guard <close> = setmetatable({}, { __close = function()
        tbc_closed = true
      end })
      aio.sleep(10)
    ]]))
    local f = work.future()
    f:wait(0.05)
    f:cancel()
    assert.has_error(function() f:result() end)
    assert.is_true(closed())
    S:close()
  end)

  it("close() cancels running tasks and their cleanup runs", function()
    local S = synchro.new({ name = "closing" })
    local marker = util.tmpname()
    local work = S:wrap(function(path)
      local ok = pcall(require("synchro.aio").sleep, 10)
      local f = io.open(path, "w")
      f:write(ok and "slept" or "cleaned")
      f:close()
    end)
    local f = work.future(marker)
    f:wait(0.05)
    local t0 = util.now()
    S:close(2)
    assert.is_true(util.now() - t0 < 2)
    assert.are.equal("cleaned", util.read(marker))
    assert.is_true(f:done())
    os.remove(marker)
  end)

  it("close() gives up on a task after the grace period", function()
    local S = synchro.new({ name = "stubborn" })
    local work = S:wrap(function()
      local aio = require "synchro.aio"
      while true do
        pcall(aio.shield, aio.sleep, 0.05) -- never gives up on its own
      end
    end)
    local f = work.future()
    f:wait(0.05)
    local t0 = util.now()
    S:close(0.2)
    local dt = util.now() - t0
    assert.is_true(dt >= 0.15 and dt < 2, "close took " .. dt)
    assert.is_true(f:done())
    local ok, err = pcall(f.result, f)
    assert.is_false(ok)
    assert.matches("ECANCELED", err, 1, true)
  end)

  it("a pending future gets ECANCELED when the synchronizer closes", function()
    -- here the closing "thread" is a wrapped call's own timer: close from
    -- the loop side is not allowed, so use a future and close meanwhile
    local S = synchro.new()
    local hang = S:wrap(function()
      local aio = require "synchro.aio"
      while true do pcall(aio.shield, aio.sleep, 0.05) end
    end)
    local f = hang.future()
    S:close(0.05)
    local ok, err = pcall(f.result, f)
    assert.is_false(ok)
    assert.matches("ECANCELED", err, 1, true)
  end)

  it("collecting a synchronizer closes it", function()
    local marker = util.tmpname()
    do
      local S = synchro.new()
      local work = S:wrap(function(path)
        local ok = pcall(require("synchro.aio").sleep, 10)
        local f = io.open(path, "w")
        f:write(ok and "slept" or "cleaned")
        f:close()
      end)
      local f = work.future(marker)
      f:wait(0.05)
      S, work, f = nil, nil, nil -- luacheck: ignore
    end
    collectgarbage()
    collectgarbage()
    assert.is_true(util.wait_for(function()
      return util.read(marker) == "cleaned"
    end, 5))
    os.remove(marker)
  end)

  it("process exit with tasks running runs their cleanup #subprocess", function()
    local marker = util.tmpname()
    local h = util.spawn_lua(child_prelude() .. ([[
      local synchro = require "synchro"
      local S = synchro.new()
      local work = S:wrap(function(path)
        local ok = pcall(require("synchro.aio").sleep, 10)
        local f = io.open(path, "w")
        f:write(ok and "slept" or "cleaned at exit")
        f:close()
      end)
      local f = work.future(%q)
      f:wait(0.1)
      print("leaving")
    ]]):format(marker))
    local code = util.wait_exit(h, 10)
    local out = util.read(h.out)
    util.cleanup(h)
    assert.are.equal(0, code)
    assert.matches("leaving", out)
    assert.are.equal("cleaned at exit", util.read(marker))
    os.remove(marker)
  end)

  it("os.exit with tasks running still runs their cleanup #subprocess", function()
    local marker = util.tmpname()
    local h = util.spawn_lua(child_prelude() .. ([[
      local synchro = require "synchro"
      local S = synchro.new()
      local work = S:wrap(function(path)
        local ok = pcall(require("synchro.aio").sleep, 10)
        local f = io.open(path, "w")
        f:write(ok and "slept" or "cleaned at os.exit")
        f:close()
      end)
      local f = work.future(%q)
      f:wait(0.1)
      os.exit(3)
    ]]):format(marker))
    local code = util.wait_exit(h, 10)
    util.cleanup(h)
    assert.are.equal(3, code)
    assert.are.equal("cleaned at os.exit", util.read(marker))
    os.remove(marker)
  end)

  it("Ctrl-C in a blocked call cancels the task, waits for its cleanup, " ..
    "then raises interrupted! #subprocess", function()
      local marker = util.tmpname()
      local r = util.ctrl_c(([[
        local synchro = require "synchro"
        local S = synchro.new()
        local work = S:wrap(function(path, started)
          local aio = require "synchro.aio"
          local f = io.open(started, "w") f:close()
          local ok, err = pcall(aio.sleep, 10)
          aio.shield(function() aio.sleep(0.1) end) -- cleanup that waits
          f = io.open(path, "w")
          f:write(ok and "slept" or "cleanup ran")
          f:close()
          error(err, 0)
        end)
        work(%q, STARTED)
        print("not reached")
      ]]):format(marker))
      assert.is_true(r.started, "child did not start: " .. r.err)
      assert.is_true(r.code ~= nil and r.elapsed < 3,
        "exit took too long" .. (r.stacks or ""))
      assert.are_not.equal(0, r.code)
      assert.matches("interrupted!", r.err, 1, true)
      assert.are.equal("", r.out)
      assert.are.equal("cleanup ran", util.read(marker))
      os.remove(marker)
    end)

  it("Ctrl-C inside synchro.run cancels its tasks, then raises #subprocess", function()
    local marker = util.tmpname()
    local r = util.ctrl_c(([[
      local synchro = require "synchro"
      local S = synchro.new()
      local work = S:wrap(function(path, started)
        local aio = require "synchro.aio"
        local f = io.open(started, "w") f:close()
        local ok, err = pcall(aio.sleep, 10)
        f = io.open(path, "w")
        f:write(ok and "slept" or "cleanup ran")
        f:close()
        error(err, 0)
      end)
      synchro.run(function() work.aio(%q, STARTED) end)
      print("not reached")
    ]]):format(marker))
    assert.is_true(r.started, "child did not start: " .. r.err)
    assert.is_not_nil(r.code, r.stacks)
    assert.are_not.equal(0, r.code)
    assert.matches("interrupted!", r.err, 1, true)
    assert.are.equal("cleanup ran", util.read(marker))
    os.remove(marker)
  end)

  it("SYNCHRO_TRACEBACK=full shows every remote frame #subprocess", function()
    local h = util.spawn_lua(child_prelude() .. [[
      local synchro = require "synchro"
      local S = synchro.new()
      local f = S:wrap(function()
        local function rec(n) if n == 0 then error("deep") end rec(n - 1) end
        rec(20)
      end)
      local ok, err = pcall(f)
      local _, frames = err:gsub("\n\t", "")
      print(frames)
    ]], "SYNCHRO_TRACEBACK=full " .. util.interpreter())
    util.wait_exit(h, 10)
    local out = util.read(h.out) or ""
    util.cleanup(h)
    assert.is_true(tonumber(out:match("%d+") or 0) >= 20, out)
  end)
end)
