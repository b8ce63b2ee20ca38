-- Terminals for real: each case runs a child script on a pseudo-terminal
-- (spec/fixtures/pty_run.py, python3's pty module), so aio.stdin() is a
-- TTY there. The child reports the terminal's mode with stty(1), and the
-- driver reports the mode the child left behind.
local util = require "spec.helpers.util"

local driver = "spec/fixtures/pty_run.py"

-- Runs source on a new pty; sends is a list of { marker, bytes }.
-- Returns the child's output and the driver's last line fields.
local function on_pty(source, sends, size, pause)
  local dir = util.tmpname()
  os.execute("mkdir -p " .. dir)
  local script = dir .. "/main.lua"
  util.write(script, util.child_prelude() .. [[
    local function mode()
      local p = io.popen("stty -a")
      local s = p:read("*a")
      p:close()
      return (s:match("%-?icanon") or "?") .. " " ..
        (s:match("%-?echo[%s;]") or "?"):gsub("[%s;]", "")
    end
  ]] .. source)
  local cmd = { "python3", driver }
  if size then cmd[#cmd + 1] = "--size " .. size end
  if pause then cmd[#cmd + 1] = "--pause " .. pause end
  for _, s in ipairs(sends or {}) do
    cmd[#cmd + 1] = ("--send %q %q"):format(s[1], s[2])
  end
  cmd[#cmd + 1] = "-- " .. util.interpreter() .. " " .. script
  local p = io.popen(table.concat(cmd, " ") .. " 2>&1")
  local out = p:read("*a")
  p:close()
  os.execute("rm -rf " .. dir)
  local exit, icanon, echo = out:match(
    "PTY exit=(%S+) icanon=(%d) echo=(%d)\n$")
  return out, { exit = exit, icanon = icanon == "1", echo = echo == "1" }
end

describe("aio.stdin() on a terminal #subprocess", function()
  it("turns raw mode on and off and gives the window size", function()
    local out, pty = on_pty([[
      local S = require("synchro").new()
      print("start " .. mode())
      local r = S:wrap(function()
        local aio = require "synchro.aio"
        local t = assert(aio.stdin())
        local out = {}
        out.tty = getmetatable(t) == require("synchro.aio.stream").Tty
        out.w, out.h = t:winsize()
        out.on = t:set_raw(true)
        out.raw = mode()
        out.again = t:set_raw(true) -- twice: still raw
        out.off = t:set_raw(false)
        out.cooked = mode()
        t:close()
        return out
      end)()
      print("tty", r.tty, r.w, r.h)
      print("on", r.on, r.raw, r.again)
      print("off", r.off, r.cooked)
    ]], nil, "91x27")
    assert.are.equal("0", pty.exit, out)
    assert.matches("start icanon echo\n", out, 1, true)
    assert.matches("tty\ttrue\t91\t27\n", out, 1, true)
    assert.matches("on\ttrue\t-icanon -echo\ttrue\n", out, 1, true)
    assert.matches("off\ttrue\ticanon echo\n", out, 1, true)
  end)

  it("restores the mode on close and when the synchronizer closes",
    function()
      local out, pty = on_pty([[
        local synchro = require "synchro"
        local S = synchro.new()
        local raw = S:wrap(function(close)
          local t = assert(require("synchro.aio").stdin())
          assert(t:set_raw(true))
          local before = mode()
          if close then t:close() end
          return before
        end)
        print("close", raw(true), mode())
        print("closed twice", pcall(S:wrap(function()
          local t = require("synchro.aio").stdin()
          t:close()
          t:close()
        end)))
        print("open", raw(false), mode())
        S:close() -- the loop VM goes, and the stream with it
        print("S:close", mode())
      ]])
      assert.are.equal("0", pty.exit, out)
      assert.matches("close\t-icanon -echo\ticanon echo\n", out, 1, true)
      assert.matches("closed twice\ttrue\n", out, 1, true)
      assert.matches("open\t-icanon -echo\t-icanon -echo\n", out, 1, true)
      assert.matches("S:close\ticanon echo\n", out, 1, true)
      assert.is_true(pty.icanon)
      assert.is_true(pty.echo)
    end)

  it("restores the mode when the script dies of an error in raw mode",
    function()
      local out, pty = on_pty([[
        local S = require("synchro").new()
        S:wrap(function()
          local t = assert(require("synchro.aio").stdin())
          assert(t:set_raw(true))
          print("raw " .. mode())
          error("boom")
        end)()
      ]])
      assert.matches("raw -icanon -echo\n", out, 1, true)
      assert.matches("boom", out, 1, true)
      assert.are.equal("1", pty.exit, out)
      assert.is_true(pty.icanon, out)
      assert.is_true(pty.echo, out)
    end)

  it("restores the mode at os.exit from a raw terminal", function()
    local out, pty = on_pty([[
      local S = require("synchro").new()
      S:wrap(function()
        assert(require("synchro.aio").stdin():set_raw(true))
      end)()
      print("raw " .. mode())
      os.exit(3)
    ]])
    assert.matches("raw -icanon -echo\n", out, 1, true)
    assert.are.equal("3", pty.exit, out)
    assert.is_true(pty.icanon, out)
  end)

  it("reads keys one by one as typed while async work runs", function()
    local out, pty = on_pty([[
      local S = require("synchro").new()
      local r = S:wrap(function()
        local aio = require "synchro.aio"
        local t = assert(aio.stdin())
        assert(t:set_raw(true))
        local ticks = 0
        local ticker = aio.spawn(function()
          while true do aio.sleep(0.01); ticks = ticks + 1 end
        end)
        local keys = {}
        io.write("ready\r\n")
        io.flush()
        for i = 1, 3 do
          local at = ticks
          keys[i] = assert(t:read(1))
          io.write(("got %d\r\n"):format(i))
          io.flush()
          keys[i] = keys[i]:byte() .. (ticks > at and "+" or "")
        end
        ticker:cancel()
        t:close()
        return table.concat(keys, " ")
      end)()
      print("keys " .. r)
    ]], { { "ready", "a" }, { "got 1", "\\x1b" }, { "got 2", "\\x03" } },
      nil, 0.2)
    assert.are.equal("0", pty.exit, out)
    -- each key alone, as typed (no line editing; Ctrl-C is a byte, not
    -- a signal); the ticker ran while each read waited
    assert.matches("keys 97+ 27+ 3+\n", out, 1, true)
    assert.is_true(pty.icanon)
  end)

  it("leaves the script's fd 0 usable by the children it runs", function()
    -- regression: libuv put its reopened terminal over fd 0 with
    -- close-on-exec, so stty and every other child lost its stdin
    local out, pty = on_pty([[
      local S = require("synchro").new()
      S:wrap(function() assert(require("synchro.aio").stdin()) end)()
      print("child sees " .. mode())
      local r = os.execute("test -t 0") -- 5.1: 0; later: true
      print("exec", r == true or r == 0)
    ]])
    assert.are.equal("0", pty.exit, out)
    assert.matches("child sees icanon echo\n", out, 1, true)
    assert.matches("exec\ttrue", out, 1, true)
  end)

  it("raises on misuse with clear errors", function()
    local out, pty = on_pty([[
      local S = require("synchro").new()
      local r = S:wrap(function()
        local t = assert(require("synchro.aio").stdin())
        local out = {}
        out[1] = select(2, pcall(t.set_raw, t, "yes"))
        out[2] = select(2, pcall(t.set_raw, t))
        out[3] = select(2, pcall(t.winsize, {}))
        out[4] = select(2, pcall(t.write, t, "x"))
        t:close()
        out[5] = select(2, pcall(t.set_raw, t, true))
        out[6] = select(2, pcall(t.winsize, t))
        return out
      end)()
      for i = 1, 6 do print("err " .. tostring(r[i])) end
    ]])
    assert.are.equal("0", pty.exit, out)
    local want = {
      "bad argument #1 to 'set_raw' (boolean expected, got string)",
      "bad argument #1 to 'set_raw' (boolean expected, got nil)",
      "bad argument #1 to 'winsize' (stream expected, got table)",
      "bad argument #1 to 'write' (stream is not writable)",
      "bad argument #1 to 'set_raw' (stream is closed)",
      "bad argument #1 to 'winsize' (stream is closed)",
    }
    for _, w in ipairs(want) do assert.matches(w, out, 1, true) end
  end)
end)
