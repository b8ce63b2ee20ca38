-- Runs the pipeline against local servers (`make demo`): starts an HTTPS
-- API and PostgreSQL (servers.lua), then runs sync.lua (plain blocking
-- code) and async.lua (the same impl.lua inside synchro.run) with this
-- interpreter, and shows the rows they saved. Without PostgreSQL, python3
-- or openssl here it says so and does nothing.
--
--   tools/with-env.sh build/5.4 lua5.4 examples/pipeline/demo.lua
local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = here .. "/../?.lua;" .. here .. "/../?/init.lua;" ..
  package.path

local servers = require "pipeline.servers"

local s, why = servers.start(20)
if not s then
  print("pipeline demo skipped: " .. tostring(why))
  return
end

local interp = arg[-1] or "lua"
local function quote(v) return "'" .. tostring(v):gsub("'", "'\\''") .. "'" end
local ok = true
for _, script in ipairs({ "sync.lua", "async.lua" }) do
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir)
  print(("== %s: %s"):format(script, s.api))
  local r = os.execute(table.concat({ quote(interp),
    quote(here .. "/" .. script), quote(s.api), quote(s.cafile),
    quote(s.conninfo), quote(dir) }, " "))
  ok = ok and (r == true or r == 0)
  os.execute("rm -rf " .. dir)
end

-- what is in the database now, read with the blocking pg API
local synchro = require "synchro"
local count = synchro.default():wrap(function(conninfo)
  local pg = require "synchro.aio.pg"
  local conn = assert(pg.connect(conninfo))
  local rows = assert(conn:query(
    "SELECT count(*) AS n, sum(bytes) AS bytes FROM downloads"))
  conn:close()
  return rows[1].n, rows[1].bytes
end)
print(("== downloads table: %d rows, %s bytes"):format(count(s.conninfo)))
s:stop()
if not ok then os.exit(1) end
