-- The seed's pipeline (examples/pipeline/) end to end against real local
-- servers: an HTTPS API with the test's CA (verification on) and a
-- throwaway PostgreSQL cluster (examples/pipeline/servers.lua). The plain
-- script (sync.lua) and the same impl.lua inside synchro.run (async.lua)
-- each run as a child process; the spec checks every file written and
-- every row saved.
local synchro = require "synchro"
local util = require "spec.helpers.util"
-- (examples/ on the path only for this require: examples/cqueues.lua
-- would hide the real cqueues from the specs that run after this one)
local saved_path = package.path
package.path = "examples/?.lua;" .. package.path
local servers = require "pipeline.servers"
package.path = saved_path

local function quote(v) return "'" .. tostring(v):gsub("'", "'\\''") .. "'" end

-- Runs examples/pipeline/<script> with args in a child interpreter;
-- returns its exit code, stdout and stderr.
local function sh_lua(script, ...)
  local dir = util.tmpname()
  os.execute("mkdir -p " .. dir)
  local cmd = { quote(util.interpreter()), "examples/pipeline/" .. script }
  for i = 1, select("#", ...) do cmd[#cmd + 1] = quote((select(i, ...))) end
  os.execute(("timeout 120 %s >%s/out 2>%s/err; echo $? >%s/code")
    :format(table.concat(cmd, " "), dir, dir, dir))
  local out, err = util.read(dir .. "/out"), util.read(dir .. "/err")
  local code = tonumber(util.read(dir .. "/code"):match("%d+"))
  os.execute("rm -rf " .. dir)
  return code, out, err
end

describe("the pipeline example", function()
  local s, why, S, rows_of
  setup(function()
    s, why = servers.start(20)
    S = synchro.new({ name = "pipeline-spec" })
    rows_of = S:wrap(function(conninfo)
      local pg = require "synchro.aio.pg"
      local conn = assert(pg.connect(conninfo))
      local rows = assert(conn:query(
        "SELECT name, title, bytes, path FROM downloads ORDER BY name"))
      conn:close()
      local out = {}
      for i, r in ipairs(rows) do
        out[i] = { name = r.name, title = r.title, bytes = r.bytes,
          path = r.path }
      end
      return out
    end)
  end)
  teardown(function()
    if s then s:stop() end
    S:close()
  end)

  local function check_run(script)
    if not s then
      pending("servers cannot run here: " .. tostring(why))
      return
    end
    local dir = util.tmpname()
    os.execute("mkdir -p " .. dir)
    local code, out, err = sh_lua(script, s.api, s.cafile, s.conninfo, dir)
    assert.are.equal(0, code, err)
    assert.are.equal("", err)
    -- the progress line counts up to 20 files
    assert.matches("\rdownloaded 20/20 files, %d+ bytes\n", out)
    local _, steps = out:gsub("\rdownloaded %d+/20 files", "")
    assert.are.equal(20, steps)
    assert.matches("20 rows in one transaction", out, 1, true)
    -- every file, byte for byte, and its row
    local rows = rows_of(s.conninfo)
    assert.are.equal(20, #rows)
    for i, name in ipairs(s.names) do
      assert.are.equal(s.files[name], util.read(dir .. "/" .. name), name)
      assert.are.same({ name = name, title = "File " .. i,
        bytes = #s.files[name], path = dir .. "/" .. name }, rows[i])
    end
    os.execute("rm -rf " .. dir)
  end

  it("runs from a plain script with the sync API (S:wrap_module) " ..
    "#subprocess",
    function() check_run("sync.lua") end)

  it("runs the same impl.lua inside synchro.run with .aio #subprocess",
    function() check_run("async.lua") end)

  it("fails with a clear error for a CA that did not sign the server " ..
    "#subprocess", function()
      if not s then
        pending("servers cannot run here: " .. tostring(why))
        return
      end
      local dir = util.tmpname()
      os.execute("mkdir -p " .. dir)
      local code, _, err = sh_lua("sync.lua", s.api, s.web.other_cafile,
        s.conninfo, dir)
      os.execute("rm -rf " .. dir)
      assert.are_not.equal(0, code)
      assert.matches("TLS certificate verification failed", err, 1, true)
    end)

  it("refuses a list whose file names leave the directory", function()
    if not s then
      pending("servers cannot run here: " .. tostring(why))
      return
    end
    local list, msg, code = S:wrap(function(api, cafile)
      package.path = "examples/?.lua;" .. package.path
      return require("pipeline.impl").fetch_list(api, { cafile = cafile })
    end)(s.evil_api, s.cafile)
    assert.is_nil(list)
    assert.are.equal("EBADJSON", code)
    assert.matches("entry 1 of", msg, 1, true)
  end)

  it("returns nil, msg, code for a missing directory and a database " ..
    "that is down", function()
      if not s then
        pending("servers cannot run here: " .. tostring(why))
        return
      end
      local res = S:wrap(function(api, cafile)
        package.path = "examples/?.lua;" .. package.path
        local impl = require "pipeline.impl"
        local list = assert(impl.fetch_list(api, { cafile = cafile }))
        local out = {}
        out.dir = { impl.download_all(list, "/nonexistent/dir",
          { cafile = cafile }) }
        out.db = { impl.save("host=127.0.0.1 port=1 user=x dbname=x", {}) }
        out.transfers = require("synchro.aio.http").transfers()
        return out
      end)(s.api, s.cafile)
      assert.is_nil(res.dir[1])
      assert.are.equal("ENOENT", res.dir[3], res.dir[2])
      assert.is_nil(res.db[1])
      assert.are.equal("08001", res.db[3], res.db[2])
      assert.are.equal(0, res.transfers) -- the other downloads were stopped
    end)

  it("saves nothing when a row fails: one transaction", function()
    if not s then
      pending("servers cannot run here: " .. tostring(why))
      return
    end
    local save = S:wrap(function(conninfo, rows)
      package.path = "examples/?.lua;" .. package.path
      return require("pipeline.impl").save(conninfo, rows)
    end)
    assert.are.equal(0, save(s.conninfo, {})) -- the table, if missing
    local before = rows_of(s.conninfo)
    local rows = {
      { name = "new-1", title = "t", bytes = 1, path = "/x" },
      { name = "new-2", title = "t", bytes = 2 ^ 40, path = "/y" }, -- too big
    }
    local n, msg, code = save(s.conninfo, rows)
    assert.is_nil(n)
    assert.are.equal("22003", code, msg) -- integer out of range
    assert.are.same(before, rows_of(s.conninfo))
  end)
end)
