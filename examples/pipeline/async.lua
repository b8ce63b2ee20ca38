-- The same pipeline (impl.lua) from async code: inside synchro.run the
-- `.aio` variants await instead of blocking, and the progress callback
-- runs as a task of synchro.run's scheduler.
--
--   lua async.lua API_URL CAFILE CONNINFO DIR
local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = here .. "/../?.lua;" .. here .. "/../?/init.lua;" ..
  package.path

local api, cafile, conninfo, dir = arg[1], arg[2], arg[3], arg[4]
if not dir then
  io.stderr:write("usage: async.lua API_URL CAFILE CONNINFO DIR\n")
  os.exit(2)
end

local synchro = require "synchro"
local pipeline = require "pipeline"

local summary = synchro.run(function()
  local config = { api = api, cafile = cafile, conninfo = conninfo,
    dir = dir }
  return assert(pipeline.run.aio(config, function(done, total, bytes)
    io.write(("\rdownloaded %d/%d files, %d bytes"):format(done, total,
      bytes))
    io.flush()
  end))
end)
io.write("\n")
print(("async: %d files, %d bytes, saved %d rows in one transaction")
  :format(summary.files, summary.bytes, summary.saved))
