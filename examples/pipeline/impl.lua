--- The seed's pipeline, written once as async code: fetch a JSON list of
--- files from a REST API over HTTPS, download them concurrently, write
--- them with aio.fs, and save a row per file into PostgreSQL in one
--- transaction. `pipeline` (init.lua) is this module wrapped for plain
--- code with S:wrap_module; inside synchro.run use the `.aio` variants.
---
--- Failures of the network, the files or the database return
--- nil, message, code; bad arguments raise.
local aio = require "synchro.aio"
local http = require "synchro.aio.http"
local pg = require "synchro.aio.pg"

local unpack = table.unpack or unpack

local M = {}

-- Options every request of the pipeline takes (verification stays on:
-- `cafile` names the CA that signed the server's certificate).
local function http_opts(opts)
  return { cafile = opts.cafile, timeout = opts.timeout or 60 }
end

local function origin(url)
  return url:match("^(https?://[^/]+)") or url
end

--- Fetches the list of files: a JSON array of { name =, url =, title = }
--- (a url starting with "/" is relative to the API's origin).
---@param url string the list's URL
---@param opts {cafile: string?, timeout: number?}|nil
---@return table[]|nil list
---@return string|nil message
---@return string|nil code
function M.fetch_list(url, opts)
  opts = opts or {}
  local r, msg, code = http.get(url, http_opts(opts))
  if not r then return nil, msg, code end
  if r.status ~= 200 then
    return nil, ("GET %s: HTTP %d"):format(url, r.status), "EHTTP"
  end
  local list, m, c = r:json()
  if not list then return nil, m, c end
  local out = {}
  for i, item in ipairs(list) do
    local name, href = item.name, item.url
    if type(name) ~= "string" or not name:match("^[%w][%w._-]*$")
      or type(href) ~= "string" then
      return nil, ("entry %d of %s: a name (letters, digits, ._-) and a " ..
        "url expected"):format(i, url), "EBADJSON"
    end
    if href:sub(1, 1) == "/" then href = origin(url) .. href end
    out[i] = { name = name, url = href,
      title = type(item.title) == "string" and item.title or name }
  end
  return out
end

--- Downloads every file of `list` at once (one connection per file, at
--- most opts.concurrency, default 20) into the directory `dir`, calling
--- progress(done, total, bytes) after each one. Returns a row per file
--- { name =, title =, bytes =, path = }, in the list's order.
---@param list table[] from fetch_list
---@param dir string an existing directory
---@param opts {cafile: string?, timeout: number?, concurrency: integer?}|nil
---@param progress (fun(done: integer, total: integer, bytes: integer))|nil
---@return table[]|nil rows
---@return string|nil message
---@return string|nil code
function M.download_all(list, dir, opts, progress)
  opts = opts or {}
  local client_opts = http_opts(opts)
  client_opts.max_per_host = opts.concurrency or 20
  local client = http.client(client_opts)
  local done, bytes = 0, 0
  local jobs = {}
  for i, item in ipairs(list) do
    jobs[i] = function()
      local r, msg, code = client:get(item.url)
      if r and r.status ~= 200 then
        msg, code = ("GET %s: HTTP %d"):format(item.url, r.status), "EHTTP"
      end
      local path = dir .. "/" .. item.name
      if r and not msg then
        local _
        _, msg, code = aio.fs.writefile(path, r.body)
      end
      if msg then error({ msg = msg, code = code }, 0) end
      done, bytes = done + 1, bytes + #r.body
      if progress then progress(done, #list, bytes) end
      return { name = item.name, title = item.title, bytes = #r.body,
        path = path }
    end
  end
  -- the first failure cancels the other downloads
  local rows = { pcall(aio.gather, unpack(jobs)) }
  if not rows[1] then
    local err = rows[2]
    if type(err) == "table" and err.msg then return nil, err.msg, err.code end
    error(err, 0) -- a cancellation, or a bug
  end
  table.remove(rows, 1)
  return rows
end

local SCHEMA = [[
  CREATE TABLE IF NOT EXISTS downloads (
    name text PRIMARY KEY, title text NOT NULL, bytes integer NOT NULL,
    path text NOT NULL, saved_at timestamptz NOT NULL DEFAULT now())]]
local UPSERT = [[
  INSERT INTO downloads (name, title, bytes, path) VALUES ($1, $2, $3, $4)
  ON CONFLICT (name) DO UPDATE SET title = $2, bytes = $3, path = $4,
    saved_at = now()]]

--- Saves the rows into the table `downloads` of the database at
--- `conninfo` (made when missing), all in one transaction: either every
--- row is saved or none. Returns the number of rows saved.
---@param conninfo string|table a libpq connection string or table
---@param rows table[] from download_all
---@return integer|nil saved
---@return string|nil message
---@return string|nil code SQLSTATE
function M.save(conninfo, rows)
  local conn, msg, code = pg.connect(conninfo, { timeout = 30 })
  if not conn then return nil, msg, code end
  local ok, n, m, c = pcall(function()
    local done, m1, c1 = conn:exec(SCHEMA)
    if not done then return nil, m1, c1 end
    return conn:transaction(function()
      local insert, m2, c2 = conn:prepare(nil, UPSERT)
      if not insert then error({ msg = m2, code = c2 }, 0) end
      for _, row in ipairs(rows) do
        local r, m3, c3 = insert:execute(row.name, row.title, row.bytes,
          row.path)
        if not r then error({ msg = m3, code = c3 }, 0) end
      end
      return #rows
    end)
  end)
  conn:close()
  if not ok then
    -- a failed insert rolled the transaction back: say why
    if type(n) == "table" and n.msg then return nil, n.msg, n.code end
    error(n, 0) -- a cancellation, or a bug
  end
  return n, m, c
end

---@class pipeline.Config
---@field api string the list's URL
---@field dir string where the files go
---@field conninfo string|table the database
---@field cafile string? the CA that signed the API's certificate
---@field concurrency integer? downloads at once (default 20)

--- The whole pipeline: the list at `api`, its files into `dir`, their rows
--- into `conninfo`. Returns { files =, bytes =, saved = }.
---@param config pipeline.Config
---@param progress (fun(done: integer, total: integer, bytes: integer))|nil
---@return table|nil summary
---@return string|nil message
---@return string|nil code
function M.run(config, progress)
  local list, msg, code = M.fetch_list(config.api, config)
  if not list then return nil, msg, code end
  local rows
  rows, msg, code = M.download_all(list, config.dir, config, progress)
  if not rows then return nil, msg, code end
  local saved
  saved, msg, code = M.save(config.conninfo, rows)
  if not saved then return nil, msg, code end
  local bytes = 0
  for _, row in ipairs(rows) do bytes = bytes + row.bytes end
  return { files = #rows, bytes = bytes, saved = saved }
end

return M
