-- synchro.aio.process: process groups (cancellation, timeouts, kill and
-- terminate reach every process a child started), env_add, and stdin
-- streamed while the output is read. Real processes, checked in /proc.
local synchro = require "synchro"
local util = require "spec.helpers.util"

-- The pids of the live (not zombie) processes whose process group is pgid.
local function group_members(pgid)
  local p = io.popen("ls /proc")
  local out = {}
  for name in p:lines() do
    if name:match("^%d+$") then
      local stat = util.read("/proc/" .. name .. "/stat") or ""
      local state, pgrp = stat:match("%) (%S+) %S+ (%d+)")
      if pgrp == tostring(pgid) and state ~= "Z" then out[#out + 1] = name end
    end
  end
  p:close()
  return out
end

local function alive(pid)
  local stat = util.read("/proc/" .. pid .. "/stat")
  return stat ~= nil and stat:match("%) (%S+)") ~= "Z"
end

describe("synchro.aio.process groups", function()
  local S
  setup(function() S = synchro.new({ name = "process-group-spec" }) end)
  teardown(function() S:close() end)

  local function run(fn, ...) return S:wrap(fn)(...) end

  it("a cancelled run leaves no process of its group", function()
    local pidfile = util.tmpname()
    finally(function() os.remove(pidfile) end)
    local f = S:wrap(function(file)
      return require("synchro.aio").process.run("sh", { "-c",
        "echo $$ > " .. file .. "; sleep 30 & sleep 31 & wait" })
    end).future(pidfile)
    local pgid
    assert.is_true(util.wait_for(function()
      pgid = tonumber(util.read(pidfile) or "")
      return pgid and #group_members(pgid) == 3
    end, 10), "sh and both sleeps run in the child's group")
    f:cancel()
    assert.has_error(function() f:result(20) end)
    assert.is_true(util.wait_for(function()
      return #group_members(pgid) == 0
    end, 10), table.concat(group_members(pgid), " "))
  end)

  it("a timed-out run ends the group too", function()
    local pidfile = util.tmpname()
    finally(function() os.remove(pidfile) end)
    local a, msg = run(function(file)
      local aio = require "synchro.aio"
      return aio.timeout(0.5, aio.process.run, "sh", { "-c",
        "echo $$ > " .. file .. "; sleep 30 & sleep 31 & wait" })
    end, pidfile)
    assert.is_nil(a)
    assert.matches("^ETIMEDOUT", msg)
    local pgid = assert(tonumber(util.read(pidfile)))
    assert.is_true(util.wait_for(function()
      return #group_members(pgid) == 0
    end, 10))
  end)

  it("kill() reaches the group; with group=false only the child",
    function()
      local grouped, alone = run(function()
        local process = require("synchro.aio").process
        local function start(group)
          local p = assert(process.spawn("sh", { "-c",
            "sleep 30 & echo $!; wait" }, { stdout = "pipe", group = group }))
          local bg = assert(p.stdout:read_line())
          assert(p:kill())
          p:wait()
          p:close()
          return bg
        end
        return start(nil), start(false)
      end)
      assert.is_true(util.wait_for(function() return not alive(grouped) end,
        10))
      assert.is_true(alive(alone), "outside the group: left running")
      os.execute("kill -KILL " .. alone)
    end)

  it("terminate() sends SIGKILL after the grace to a child ignoring "
    .. "SIGTERM", function()
      local code, signal = run(function()
        local process = require("synchro.aio").process
        local p = assert(process.spawn("sh", { "-c",
          "trap '' TERM; echo ready; sleep 30" },
          { stdout = "pipe", kill_grace = 0.2 }))
        assert(p.stdout:read_line() == "ready")
        local c, s = p:terminate()
        p:close()
        return c, s
      end)
      assert.equal(9, signal)
      assert.equal(137, code)
    end)

  it("env_add extends the inherited environment; env replaces it",
    function()
      local added, merged = run(function()
        local process = require("synchro.aio").process
        local a = assert(process.run("sh", { "-c", "echo $SYNCHRO_X:$HOME" },
          { env_add = { SYNCHRO_X = "yes" } }))
        local b = assert(process.run("/bin/sh", { "-c",
          "echo $SYNCHRO_X:$SYNCHRO_Y:$HOME" },
          { env = { SYNCHRO_Y = 2 }, env_add = { SYNCHRO_X = "x" } }))
        return a, b
      end)
      assert.equal("yes:" .. os.getenv("HOME") .. "\n", added)
      assert.equal("x:2:\n", merged)
    end)

  it("streams 1 MiB through cat while its output is read", function()
    local n, same, n2 = run(function()
      local aio = require "synchro.aio"
      local chunk = ("0123456789abcdef"):rep(4096) -- 64 KiB
      local p = assert(aio.process.spawn("cat", {},
        { stdin = "pipe", stdout = "pipe" }))
      local writer = aio.spawn(function()
        for _ = 1, 16 do assert(p.stdin:write(chunk)) end
        p.stdin:close()
      end)
      local out = assert(p.stdout:read_all())
      writer:join()
      p:wait()
      p:close()
      local i = 0
      local out2 = assert(aio.process.run("cat", {}, { stdin = function()
        i = i + 1
        if i <= 16 then return chunk end
      end }))
      return #out, out == chunk:rep(16), #out2
    end)
    assert.equal(1024 * 1024, n)
    assert.is_true(same)
    assert.equal(1024 * 1024, n2)
  end)

  it("rejects bad group, kill_grace and env_add options", function()
    local function fails(opts)
      local ok, err = pcall(run, function(o)
        return require("synchro.aio").process.run("true", {}, o)
      end, opts)
      assert.is_false(ok)
      return err
    end
    assert.matches("bad argument #3 to 'run' %(group: boolean expected",
      fails({ group = "yes" }))
    assert.matches("bad argument #3 to 'run' %(kill_grace is NaN",
      fails({ kill_grace = 0 / 0 }))
    assert.matches("bad argument #3 to 'run' %(env_add: table expected",
      fails({ env_add = "X=1" }))
    assert.matches("bad argument #3 to 'run' %(env_add: bad variable name",
      fails({ env_add = { ["A=B"] = "1" } }))
  end)
end)
