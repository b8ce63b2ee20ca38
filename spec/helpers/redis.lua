-- A real redis-server for the specs: started on 127.0.0.1:port in a temp
-- dir (no persistence), ready once `connect("127.0.0.1", port)` succeeds,
-- stopped and removed by stop().
local util = require "spec.helpers.util"

local M = {}

--- Starts redis-server on port (extra: more command-line options); waits
--- until connect(host, port) returns a connection. Returns the server.
function M.start(port, connect, extra)
  local dir = util.tmpname()
  os.execute("mkdir -p " .. dir)
  local server = { dir = dir, pidfile = dir .. "/pid", code = dir .. "/code" }
  os.execute(("(redis-server --port %d --bind 127.0.0.1 --save '' " ..
    "--appendonly no --daemonize no %s >%s/log 2>&1 & echo $! >%s; " ..
    "wait $!; echo $? >%s) &"):format(port, extra or "", dir,
      server.pidfile, server.code))
  assert(util.wait_for(function() return util.read(server.pidfile) end, 5))
  server.pid = util.read(server.pidfile):match("%d+")
  assert(util.wait_for(function()
    local c = connect("127.0.0.1", port)
    if c then c:close() end
    return c ~= nil
  end, 10), "redis-server did not start: " ..
    tostring(util.read(dir .. "/log")))
  return server
end

--- Stops the server and removes its directory; accepts nil.
function M.stop(server)
  if server and server.pid then
    os.execute("kill " .. server.pid .. " 2>/dev/null")
    assert(util.wait_for(function() return util.read(server.code) end, 10),
      "redis-server did not stop")
    os.execute("rm -rf " .. server.dir)
  end
end

return M
