-- synchro.aio.fs.watch: real change events from a temporary directory.
-- The system may coalesce events, so each step waits for the event that
-- must appear, not for an exact sequence.
local synchro = require "synchro"

describe("synchro.aio.fs.watch", function()
  local S
  setup(function() S = synchro.new({ name = "watch-spec" }) end)
  teardown(function() S:close() end)

  local function run(fn, ...) return S:wrap(fn)(...) end

  it("reports create, modify, rename and delete", function()
    local log = run(function()
      local aio = require "synchro.aio"
      local fs = aio.fs
      local dir = assert(fs.mkdtemp("/tmp/synchro-watch-"))
      local w = assert(fs.watch(dir))
      local log = {}
      -- waits for an event on name (of change, if given)
      local function expect(step, name, change)
        while true do
          local ev, err = w:next(10)
          if not ev then
            log[#log + 1] = step .. ": " .. tostring(err)
            return
          end
          if ev.name == name and (change == nil or ev.change == change) then
            assert(ev.path == dir .. "/" .. name, ev.path)
            log[#log + 1] = step
            return
          end
        end
      end
      assert(fs.writefile(dir .. "/a", "one"))
      expect("create", "a", "rename")
      local f = assert(fs.open(dir .. "/a", "a"))
      assert(f:write("two"))
      f:close()
      expect("modify", "a", "change")
      assert(fs.rename(dir .. "/a", dir .. "/b"))
      expect("rename", "b", "rename")
      assert(fs.unlink(dir .. "/b"))
      expect("delete", "b", "rename")
      w:close()
      assert(w:next() == nil, "a closed watch ends")
      w:close() -- twice: nothing
      assert(fs.rmdir(dir))
      return table.concat(log, " ")
    end)
    assert.equal("create modify rename delete", log)
  end)

  it("is an iterator that a for loop drives", function()
    local name = run(function()
      local aio = require "synchro.aio"
      local fs = aio.fs
      local dir = assert(fs.mkdtemp("/tmp/synchro-watch-"))
      local w = assert(fs.watch(dir))
      aio.spawn(function() assert(fs.writefile(dir .. "/x", "1")) end)
      local got
      -- PUC 5.1 cannot yield in a for iterator: call next() there
      if _VERSION == "Lua 5.1" and not rawget(_G, "jit") then
        got = w:next(10).name
      else
        for ev in w do -- luacheck: ignore 512
          got = ev.name
          break
        end
      end
      w:close()
      assert(fs.unlink(dir .. "/x"))
      assert(fs.rmdir(dir))
      return got
    end)
    assert.equal("x", name)
  end)

  if _VERSION == "Lua 5.4" then
    it("break closes the watch on 5.4 (a to-be-closed value)", function()
      local before, inside, after = run(load([[
        local aio = require "synchro.aio"
        local core = require "synchro.core"
        local fs = aio.fs
        local dir = assert(fs.mkdtemp("/tmp/synchro-watch-"))
        local before = core.loop_handles()
        aio.spawn(function() assert(fs.writefile(dir .. "/y", "1")) end)
        local inside
        for _ in fs.watch(dir) do
          inside = core.loop_handles()
          break
        end
        aio.sleep(0.02) -- the handle's close callback runs
        local after = core.loop_handles()
        assert(fs.unlink(dir .. "/y"))
        assert(fs.rmdir(dir))
        return before, inside, after
      ]]))
      assert.equal(before + 1, inside)
      assert.equal(before, after)
    end)
  end

  it("a cancelled wait raises the cancellation and leaves no handle",
    function()
      local before, after, cancelled = run(function()
        local aio = require "synchro.aio"
        local core = require "synchro.core"
        local fs = aio.fs
        local dir = assert(fs.mkdtemp("/tmp/synchro-watch-"))
        local before = core.loop_handles()
        local w = assert(fs.watch(dir))
        local t = aio.spawn(function() return w:next() end)
        aio.sleep(0.02)
        t:cancel()
        local ok, err = pcall(t.join, t)
        w:close()
        aio.sleep(0.02)
        assert(fs.rmdir(dir))
        return before, core.loop_handles(), not ok and aio.is_cancelled(err)
      end)
      assert.is_true(cancelled)
      assert.equal(before, after)
    end)

  it("a missing path is nil, message, name; bad options raise", function()
    local a, msg, code = run(function()
      return require("synchro.aio").fs.watch("/nonexistent/synchro-watch")
    end)
    assert.is_nil(a)
    assert.equal("ENOENT", code)
    assert.matches("^ENOENT", msg)
    local ok, err = pcall(run, function()
      return require("synchro.aio").fs.watch("/tmp", { recurse = true })
    end)
    assert.is_false(ok)
    assert.matches("bad argument #2 to 'watch' %(unknown option 'recurse'",
      err)
    ok, err = pcall(run, function()
      return require("synchro.aio").fs.watch(42)
    end)
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'watch'", err)
  end)
end)
