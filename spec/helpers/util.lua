-- Helpers shared by the specs: temp files, child Lua processes, waiting.
local core = require "synchro.core"

local util = {}

util.lua51 = _VERSION == "Lua 5.1"
util.puc51 = util.lua51 and not rawget(_G, "jit")
util.lua54 = _VERSION == "Lua 5.4"
util.integers = math.type ~= nil

function util.now() return core.now() end

function util.tmpname()
  local name = os.tmpname()
  os.remove(name)
  return name
end

function util.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

function util.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

function util.sleep(seconds)
  os.execute(("sleep %.3f"):format(seconds))
end

--- Polls pred() every 20 ms for up to timeout seconds.
function util.wait_for(pred, timeout)
  local deadline = util.now() + (timeout or 10)
  while util.now() < deadline do
    if pred() then return true end
    util.sleep(0.02)
  end
  return pred() and true or false
end

--- The interpreter running this process.
function util.interpreter()
  local p = io.popen("readlink /proc/" .. util.pid() .. "/exe")
  local exe = p:read("*l")
  p:close()
  return exe
end

function util.pid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("*l"):match("^(%d+)")
  f:close()
  return pid
end

--- The first lines of a child script: this process's package paths, so
--- that the child finds the same synchro.
function util.child_prelude()
  return ("package.path = %q\npackage.cpath = %q\n")
    :format(package.path, package.cpath)
end

--- Starts `interp script` in the background; returns a handle with the
--- files where its stdout, stderr and exit code go.
function util.spawn_lua(source, interp)
  local dir = util.tmpname()
  os.execute("mkdir -p " .. dir)
  local script = dir .. "/main.lua"
  util.write(script, source)
  local h = { dir = dir, out = dir .. "/out", err = dir .. "/err",
    code = dir .. "/code", pidfile = dir .. "/pid" }
  os.execute(("(%s %s >%s 2>%s & echo $! >%s; wait $!; echo $? >%s) &")
    :format(interp or util.interpreter(), script, h.out, h.err, h.pidfile,
      h.code))
  -- the file exists, empty, between the shell's redirection and its
  -- write: wait for the number (a nil pid made every kill a no-op, and a
  -- Ctrl-C test then waited for its child's whole statement)
  util.wait_for(function()
    return (util.read(h.pidfile) or ""):match("%d+")
  end, 5)
  h.pid = (util.read(h.pidfile) or ""):match("%d+")
  assert(h.pid, "the child's pid was not written")
  return h
end

function util.kill(h, sig)
  os.execute(("kill -%s %s 2>/dev/null"):format(sig, h.pid))
end

-- The exit code once the shell has written it (the file exists, empty,
-- between its creation and the write).
local function exit_code(h)
  local code = util.read(h.code)
  return code and tonumber(code:match("%d+"))
end

--- Waits for the child to exit; returns its exit code (nil on timeout).
function util.wait_exit(h, timeout)
  util.wait_for(function() return exit_code(h) end, timeout)
  return exit_code(h)
end

--- The stacks of every thread of the child (for the message of a test
--- that found it hung), or a note saying why there are none.
function util.stacks(h)
  if not h.pid then return "(no pid)" end
  local p = io.popen(("gdb -p %s -batch -ex 'thread apply all bt' 2>&1")
    :format(h.pid))
  local text = p:read("*a")
  p:close()
  return text
end

function util.cleanup(h)
  if h.pid and not util.read(h.code) then util.kill(h, "KILL") end
  os.execute("rm -rf " .. h.dir)
end

--- The first lines of a child script: this process's package paths.
function util.child_prelude()
  return ("package.path = %q\npackage.cpath = %q\n")
    :format(package.path, package.cpath)
end

--- Ctrl-C in a child: runs `source` in a child interpreter (after
--- child_prelude(), with a local STARTED: the name of a file the child
--- creates, from its task, once it is where the interrupt should hit),
--- waits for that file, sends SIGINT, and waits for the child to exit.
--- Returns { started = bool, code = exit code (nil: still running after
--- `timeout`), out =, err =, elapsed = seconds from the signal to the
--- exit, stacks = the hung child's threads (when code is nil) }.
---@param source string
---@param opts {timeout: number?, interp: string?}|nil
---@return table
function util.ctrl_c(source, opts)
  opts = opts or {}
  local started = util.tmpname()
  local h = util.spawn_lua(util.child_prelude() ..
    ("local STARTED = %q\n"):format(started) .. source, opts.interp)
  local r = { started = util.wait_for(function()
    return util.read(started) ~= nil
  end, 20) }
  if r.started then
    util.sleep(0.1) -- into the wait that the interrupt is meant for
    local t0 = util.now()
    util.kill(h, "INT")
    r.code = util.wait_exit(h, opts.timeout or 10)
    r.elapsed = util.now() - t0
  end
  if r.code == nil then r.stacks = util.stacks(h) end
  r.out, r.err = util.read(h.out) or "", util.read(h.err) or ""
  util.cleanup(h)
  os.remove(started)
  return r
end

return util
