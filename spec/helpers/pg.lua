-- A throwaway PostgreSQL cluster for specs and examples: initdb in a
-- temp dir, pg_ctl start on a free port, listening on 127.0.0.1 only,
-- as an unprivileged user (PostgreSQL refuses to run as root).
--
--   local pgserver = require "spec.helpers.pg"
--   local server = assert(pgserver.start())  -- or nil, reason
--   ... server.conninfo, server.port ...
--   server:stop()
local M = {}

local BINDIRS = { "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin",
  "/usr/lib/postgresql/14/bin" }

-- The server's tools run without the sanitizer runtime a test run may
-- preload into this process.
local function sh(cmd)
  local p = io.popen("env -u LD_PRELOAD -u ASAN_OPTIONS -u TSAN_OPTIONS " ..
    cmd .. " 2>&1")
  local out = p:read("*a")
  local ok, _, code = p:close()
  if type(ok) == "number" then code = ok; ok = code == 0 end -- 5.1
  return ok == true or ok == 0, out, code
end

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

--- The directory of initdb and pg_ctl, or nil.
function M.bindir()
  for _, d in ipairs(BINDIRS) do
    local f = io.open(d .. "/initdb")
    if f then f:close() return d end
  end
  return nil
end

-- The user to run the server as, and how to run a command as that user.
local function as_user()
  local ok, uid = sh("id -u")
  if not ok then return nil end
  if uid:match("^%s*(%d+)") ~= "0" then
    return nil, function(cmd) return cmd end
  end
  for _, u in ipairs({ "postgres", "nobody" }) do
    if sh("id -u " .. u) then
      return u, function(cmd)
        return "runuser -u " .. u .. " -- sh -c " .. quote(cmd)
      end
    end
  end
  error("no unprivileged user to run PostgreSQL as (postgres or nobody)")
end

-- A port nothing listens on now (the kernel's pick, released).
local function free_port()
  local ok, out = sh("python3 -c 'import socket; s = socket.socket(); " ..
    "s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'")
  local port = ok and tonumber(out:match("%d+"))
  if port then return port end
  return math.random(20000, 60000)
end

--- Starts a cluster; returns a server { port, conninfo, dir, user } with
--- :stop(), or nil and why not (no PostgreSQL installed, or it failed).
---@return table|nil
---@return string|nil
function M.start()
  local bindir = M.bindir()
  if not bindir then
    return nil, "PostgreSQL is not installed (Debian: postgresql)"
  end
  local user, run = as_user()
  local dir = os.tmpname()
  os.remove(dir)
  assert(sh("mkdir -p " .. quote(dir)))
  if user then assert(sh("chown " .. user .. " " .. quote(dir))) end
  local data = dir .. "/data"
  local ok, out = sh(run(("%s/initdb -D %s -U synchro -A trust -E UTF8 " ..
    "--no-locale --no-sync"):format(bindir, quote(data))))
  if not ok then
    sh("rm -rf " .. quote(dir))
    return nil, "initdb failed: " .. out
  end
  local server = { dir = dir, user = user }
  for _ = 1, 5 do
    local port = free_port()
    local opts = ("-c listen_addresses=127.0.0.1 -c port=%d " ..
      "-c unix_socket_directories=%s -c fsync=off -c max_connections=150")
      :format(port, dir)
    ok, out = sh(run(("%s/pg_ctl -D %s -l %s -w -t 30 -o %s start")
      :format(bindir, quote(data), quote(dir .. "/log"), quote(opts))))
    if ok then
      server.port = port
      break
    end
  end
  if not server.port then
    local log = io.open(dir .. "/log")
    local text = log and log:read("*a") or ""
    if log then log:close() end
    sh("rm -rf " .. quote(dir))
    return nil, "pg_ctl start failed: " .. out .. text
  end
  server.conninfo = ("host=127.0.0.1 port=%d user=synchro dbname=postgres")
    :format(server.port)
  function server.stop(self)
    if self.stopped then return end
    self.stopped = true
    sh(run(("%s/pg_ctl -D %s -m immediate -w -t 30 stop")
      :format(bindir, quote(data))))
    sh("rm -rf " .. quote(dir))
  end
  return server
end

return M
