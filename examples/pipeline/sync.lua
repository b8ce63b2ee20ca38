-- The pipeline from a plain (blocking) script:
--
--   lua sync.lua API_URL CAFILE CONNINFO DIR
--
-- fetches the JSON list at API_URL over HTTPS (verified with the CA in
-- CAFILE), downloads its files concurrently into DIR with a progress
-- line, and saves a row per file into PostgreSQL in one transaction.
-- examples/pipeline/demo.lua starts local servers and runs it.
local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = here .. "/../?.lua;" .. here .. "/../?/init.lua;" ..
  package.path

local api, cafile, conninfo, dir = arg[1], arg[2], arg[3], arg[4]
if not dir then
  io.stderr:write("usage: sync.lua API_URL CAFILE CONNINFO DIR\n")
  os.exit(2)
end

local pipeline = require "pipeline" -- blocking calls, no event loop here

local opts = { cafile = cafile }
local list = assert(pipeline.fetch_list(api, opts))
print(("listed %d files"):format(#list))

local rows = assert(pipeline.download_all(list, dir, opts,
  function(done, total, bytes)
    io.write(("\rdownloaded %d/%d files, %d bytes"):format(done, total,
      bytes))
    io.flush()
  end))
io.write("\n")

local saved = assert(pipeline.save(conninfo, rows))
print(("saved %d rows in one transaction"):format(saved))
