-- A throwaway HTTPS server for specs and examples: a CA and a server
-- certificate for 127.0.0.1 (only; not "localhost") made with the openssl
-- command in a temp dir, and python3's http.server wrapped with ssl
-- (spec/fixtures/https_server.py) on a port the kernel picks, serving a
-- directory.
--
--   local https = require "spec.helpers.https"
--   local server = assert(https.start(root))   -- or nil, reason
--   ... server.url, server.port, server.cafile, server.other_cafile ...
--   server:stop()
local M = {}

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
if here:sub(1, 1) ~= "/" then
  here = (os.getenv("PWD") or ".") .. "/" .. here
end
local FIXTURE = here .. "/../fixtures/https_server.py"

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Commands run without the sanitizer runtime a test run may preload.
local function sh(cmd)
  local r = os.execute("(unset LD_PRELOAD; " .. cmd .. ") >/dev/null 2>&1")
  return r == true or r == 0
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function sleep(seconds) os.execute(("sleep %.3f"):format(seconds)) end

--- Starts a server for the files under `root` (default: an empty temp
--- dir). Returns { url = "https://127.0.0.1:PORT", port, cafile,
--- other_cafile (a CA that did not sign it), dir, root } with :stop(), or
--- nil and why not (no openssl or python3, or it did not start).
---@param root string|nil
---@return table|nil
---@return string|nil
function M.start(root)
  if not sh("command -v openssl && command -v python3") then
    return nil, "openssl and python3 are needed (Debian: openssl python3)"
  end
  local dir = os.tmpname()
  os.remove(dir)
  if not sh("mkdir -p " .. quote(dir)) then return nil, "mkdir failed" end
  local server = { dir = dir, root = root or dir,
    cafile = dir .. "/ca.pem", other_cafile = dir .. "/otherca.pem" }
  local q = quote(dir)
  local function ca(name)
    return sh(("cd %s && openssl req -x509 -newkey rsa:2048 -nodes " ..
      "-days 2 -subj /CN=%s -keyout %s.key -out %s.pem"):format(q, name,
      name, name))
  end
  local f = io.open(dir .. "/ext.cnf", "w")
  f:write("subjectAltName=IP:127.0.0.1\n")
  f:close()
  if not (ca("ca") and ca("otherca") and sh(("cd %s && openssl req " ..
      "-newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key " ..
      "-out server.csr && openssl x509 -req -in server.csr -CA ca.pem " ..
      "-CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf " ..
      "-out server.pem"):format(q))) then
    sh("rm -rf " .. q)
    return nil, "openssl could not make the certificates"
  end
  local portfile, pidfile = dir .. "/port", dir .. "/pid"
  os.execute(("cd %s && (env -u LD_PRELOAD python3 %s 0 %s %s %s " ..
    ">%s 2>&1 & echo $! >%s)"):format(quote(server.root), quote(FIXTURE),
    quote(dir .. "/server.pem"), quote(dir .. "/server.key"),
    quote(portfile), quote(dir .. "/log"), quote(pidfile)))
  for _ = 1, 500 do -- up to 10 s
    server.port = tonumber((read(portfile) or ""):match("^(%d+)\n"))
    if server.port then break end
    sleep(0.02)
  end
  server.pid = (read(pidfile) or ""):match("%d+")
  function server.stop(self)
    if self.stopped then return end
    self.stopped = true
    if self.pid then os.execute("kill " .. self.pid .. " 2>/dev/null") end
    sh("rm -rf " .. q)
  end
  if not server.port then
    local log = read(dir .. "/log") or ""
    server:stop()
    return nil, "the HTTPS server did not start: " .. log
  end
  server.url = "https://127.0.0.1:" .. server.port
  return server
end

return M
