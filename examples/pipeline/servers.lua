-- The local servers the pipeline runs against, for demo.lua and
-- spec/pipeline_spec.lua: an HTTPS "REST API" (python3's http.server with
-- ssl and a CA made with openssl, spec/helpers/https.lua) serving
-- /api/files.json and N files under /files/, and a throwaway PostgreSQL
-- cluster (spec/helpers/pg.lua). Both on 127.0.0.1, on free ports, in
-- temp dirs.
--
--   local servers = require "pipeline.servers"
--   local s = assert(servers.start(20))   -- or nil, why not
--   ... s.api, s.cafile, s.conninfo, s.files[name] (its content) ...
--   s:stop()
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local saved_path = package.path
package.path = here .. "/../../?.lua;" .. package.path -- spec.helpers
local https = require "spec.helpers.https"
local pgserver = require "spec.helpers.pg"
package.path = saved_path

local M = {}

local function write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

-- File i: a few KiB to a few hundred KiB of numbered lines.
local function content(i)
  local lines = {}
  for n = 1, i * i * 40 do
    lines[n] = ("file %02d line %06d\n"):format(i, n)
  end
  return table.concat(lines)
end

--- Makes n files and the list, starts both servers. Returns { api,
--- evil_api (a list whose name leaves the directory), cafile, conninfo,
--- files = { [name] = content }, names } with :stop(),
--- or nil and why the servers cannot run here.
---@param n integer|nil default 20
---@return table|nil
---@return string|nil
function M.start(n)
  n = n or 20
  local root = os.tmpname()
  os.remove(root)
  os.execute("mkdir -p " .. root .. "/api " .. root .. "/files")
  local files, names, entries = {}, {}, {}
  for i = 1, n do
    local name = ("file-%02d.txt"):format(i)
    files[name], names[i] = content(i), name
    write(root .. "/files/" .. name, files[name])
    entries[i] = ('{"name": "%s", "url": "/files/%s", "title": "File %d"}')
      :format(name, name, i)
  end
  write(root .. "/api/files.json", "[" .. table.concat(entries, ",\n") ..
    "]\n")
  -- a list that tries to write outside the download directory
  write(root .. "/api/evil.json",
    '[{"name": "../evil.txt", "url": "/files/file-01.txt"}]\n')
  local web, why = https.start(root)
  if not web then
    os.execute("rm -rf " .. root)
    return nil, why
  end
  local db
  db, why = pgserver.start()
  if not db then
    web:stop()
    os.execute("rm -rf " .. root)
    return nil, why
  end
  local s = { api = web.url .. "/api/files.json",
    evil_api = web.url .. "/api/evil.json", cafile = web.cafile,
    conninfo = db.conninfo, files = files, names = names, web = web,
    db = db }
  function s.stop(self)
    self.web:stop()
    self.db:stop()
    os.execute("rm -rf " .. root)
  end
  return s
end

return M
