--- synchro.aio.pg: PostgreSQL for async code on a synchronizer's loop, on
--- libpq's asynchronous API. The connection's socket is waited for by the
--- loop (src/aio/pg.c); nothing blocks the loop but libpq's own parsing.
---
--- One statement at a time runs on a connection: concurrent queries of
--- several tasks on one connection take turns (a lock); use a pool for
--- concurrency, or `conn:pipeline` for many statements in one round trip.
---
--- Cancelling a task that waits for a statement (a timeout, a future's
--- cancel, Ctrl-C in a blocked caller) sends a cancel request to the
--- server, waits (shielded, at most CANCEL_DRAIN seconds) until the
--- statement has ended, and leaves the connection usable.
---
--- Errors: misuse raises; a server error returns nil, message, SQLSTATE
--- ("23505"); a lost or unusable connection returns nil, message, "08006"
--- ("08001" when connecting, "08003" once closed).
local core = require "synchro.core"
local check = require "synchro.check"
check.built_with(core.pg_connect_start, "synchro.aio.pg", "libpq",
  "libpq-dev")
local sched = require "synchro.sched"
local sync = require "synchro.aio.sync"

local argerror, check_opts = check.argerror, check.opts
local unpack = table.unpack or unpack
local pack = sched.pack
local math_type = math.type
local huge = math.huge

local CANCEL_DRAIN = 5 -- seconds a cancelled statement may take to end
local CONNECT_FAILED, LOST, CLOSED = "08001", "08006", "08003"

local has_cjson, cjson = pcall(require, "cjson")
local json = has_cjson and (cjson.new and cjson.new() or cjson) or nil

local pg = {}

--- The value of SQL NULL in results and parameters (JSON null too). It
--- keeps its identity across a synchronizer's boundary.
pg.null = setmetatable({}, {
  __tostring = function() return "pg.null" end,
  __newindex = function() error("pg.null is read-only", 2) end,
  __synchro = function() return "synchro.pg.null", "" end,
})
local Null = pg.null

local Bytea = {
  __synchro = function(b) return "synchro.pg.bytea", b[1] end,
}

--- Marks the string s as binary data (bytea): it is sent in binary form
--- whatever it holds. Strings that hold a zero byte are sent this way on
--- their own.
---@param s string
---@return table
function pg.bytea(s)
  check.type(s, "string", 1, "bytea")
  return setmetatable({ s }, Bytea)
end

do -- how null and bytea come back from another VM
  local registry = debug.getregistry()
  local ext = registry["synchro.ext"] or {}
  registry["synchro.ext"] = ext
  ext["synchro.pg.null"] = function() return Null end
  ext["synchro.pg.bytea"] = function(s) return pg.bytea(s) end
  -- "synchro.*" kinds are reserved to synchro's own marshallers
  local kinds = require "synchro.kinds"
  kinds.own(getmetatable(Null).__synchro)
  kinds.own(Bytea.__synchro)
end

--- Whether lua-cjson was found: json/jsonb columns are decoded and plain
--- tables are sent as JSON only then (else json columns come as text).
pg.json = json ~= nil

---@class synchro.pg.Connection
local Connection = {}
Connection.__index = Connection
pg.Connection = Connection

---@class synchro.pg.Rows: table[]
---@field fields string[] column names, in order
---@field command string the command tag ("INSERT 0 1")
---@field affected integer|nil rows affected (INSERT, UPDATE, DELETE, ...)

-- Parameters ---------------------------------------------------------------

local function to_param(v, n, name)
  local t = type(v)
  if v == nil or v == Null then return nil end
  if t == "string" then return v end
  if t == "boolean" then return v and "t" or "f" end
  if t == "number" then
    if math_type and math_type(v) == "integer" then
      return ("%d"):format(v)
    end
    if v ~= v then return "NaN" end
    if v == huge then return "Infinity" end
    if v == -huge then return "-Infinity" end
    if v % 1 == 0 and v > -2 ^ 53 and v < 2 ^ 53 then
      return ("%d"):format(v)
    end
    return ("%.17g"):format(v)
  end
  local mt = getmetatable(v)
  if mt == Bytea then return { v[1] } end
  if t == "table" and mt == nil and json then return json.encode(v) end
  argerror(n, name, "cannot send " .. t .. " as a parameter", 4)
end

-- params from index `first` of the arguments (arguments n counted from 1)
local function params(name, skip, ...)
  local n = select("#", ...)
  local out = { n = n }
  for i = 1, n do out[i] = to_param((select(i, ...)), i + skip, name) end
  return out
end

-- Results -----------------------------------------------------------------

local function denull(v)
  if v == json.null then return Null end
  if type(v) == "table" then
    for k, x in pairs(v) do
      if x == json.null then v[k] = Null
      elseif type(x) == "table" then denull(x) end
    end
  end
  return v
end

local function shape(self, res)
  local rows = res.rows
  if json and self.decode_json and #res.json > 0 then
    for _, name in ipairs(res.json) do
      for i = 1, #rows do
        local v = rows[i][name]
        if type(v) == "string" then rows[i][name] = denull(json.decode(v)) end
      end
    end
  end
  rows.fields, rows.command, rows.affected =
    res.fields, res.command, res.affected
  return rows
end

-- Waiting for the socket --------------------------------------------------

-- Waits until the socket is ready for events ("r", "w", "rw"). Returns
-- true; false when seconds passed or an idle wait was interrupted; nil,
-- message, code when polling failed or the connection was closed.
-- Cancellation raises (after stopping the wait).
local function await_io(self, events, seconds, idle)
  local pq = self.pq
  if pq == nil then return nil, "connection is closed", CLOSED end
  local task, token = sched.prepare("pg")
  local ready
  local ok, msg, code = pq:wait(events, function(r, w)
    ready = r or w
    task.sched:wake(task, token)
  end)
  if not ok then return nil, msg, code or LOST end
  local function interrupt()
    if self.pq then pq:wait_stop() end
    task.sched:wake(task, token)
  end
  local timer
  if seconds then
    timer = core.timer(interrupt)
    timer:start(seconds)
  end
  self.waiter = { task = task, token = token }
  if idle then self.interrupt_idle = interrupt end
  local done, err = pcall(sched.suspend, task, function()
    if self.pq then pq:wait_stop() end
  end)
  self.waiter, self.interrupt_idle = nil, nil
  if timer then timer:close() end
  if not done then error(err, 0) end
  if self.pq == nil then return nil, "connection is closed", CLOSED end
  return ready == true
end

local function lost(self)
  local pq = self.pq
  if pq == nil then return nil, "connection is closed", CLOSED end
  return nil, pq:error_message(), LOST
end

-- Notifications that arrived go to the queues of their listeners.
local function collect(self)
  local list = self.pq:notifies()
  for i = 1, #list do
    local n = list[i]
    local queues = self.listeners[n.channel]
    if queues then
      for q in pairs(queues) do q[#q + 1] = n end
    end
  end
end

local function flush_all(self, seconds)
  local pq = self.pq
  while true do
    local r, msg = pq:flush()
    if r == nil then return nil, msg, LOST end
    if r == 0 then return true end
    local ok, m, c = await_io(self, "rw", seconds)
    if not ok then
      if ok == false then return nil, "timed out", "ETIMEDOUT" end
      return nil, m, c
    end
    if not pq:consume() then return lost(self) end
    collect(self)
  end
end

-- Reads the results of one statement (up to libpq's NULL result); returns
-- the last one, or nil, message, SQLSTATE of the first error.
local function read_results(self, seconds)
  local pq = self.pq
  local last, err
  while true do
    while pq:busy() do
      local ok, m, c = await_io(self, "r", seconds)
      if not ok then
        if ok == false then return nil, "timed out", "ETIMEDOUT" end
        return nil, m, c
      end
      if not pq:consume() then return lost(self) end
      collect(self)
    end
    local res = pq:result(Null)
    if res == nil then break end
    if res.status == "PGRES_PIPELINE_SYNC" then return res end
    if res.error then
      err = err or res
    elseif res.status == "PGRES_PIPELINE_ABORTED" then
      err = err or { error = "pipeline aborted: an earlier statement failed",
        sqlstate = "25P02" }
    else
      last = res
    end
  end
  collect(self)
  if err then return nil, err.error, err.sqlstate end
  return last
end

-- After a cancellation or an error in the middle of a statement: ask the
-- server to cancel it, then wait (shielded by the caller) until it ended,
-- so that the connection can run the next one. A statement that does not
-- end in time closes the connection.
local function cancel_and_drain(self)
  if self.in_pipeline then -- no telling where its results stand
    self:close()
    return
  end
  local pq = self.pq
  local task = sched.task("pg")
  local cancel_done, wake_me = false, nil
  local req = pq:cancel(function()
    cancel_done = true
    if wake_me then wake_me() end
  end)
  local deadline = core.now() + CANCEL_DRAIN
  local ok = flush_all(self, CANCEL_DRAIN)
  if ok then
    local _, _, code = read_results(self, math.max(0, deadline - core.now()))
    ok = code ~= "ETIMEDOUT" and code ~= LOST and code ~= CLOSED
  end
  if req and not cancel_done and self.pq then
    -- the request must not outlive this statement and hit the next one
    local _, token = sched.prepare("pg cancel")
    wake_me = function() task.sched:wake(task, token) end
    local timer = core.timer(wake_me)
    timer:start(math.max(0, deadline - core.now()))
    sched.suspend(task)
    timer:close()
  end
  if req then req:close() end
  if self.pq and (not ok or self.pq:busy()) then self:close() end
end

local function check_open(self, name)
  if getmetatable(self) ~= Connection then
    argerror(1, name, "connection expected, got " .. type(self), 3)
  end
  if self.pq == nil then argerror(1, name, "connection is closed", 3) end
end

-- Runs body(self) holding the connection; cleans up a statement that a
-- cancellation or an error interrupted.
local function run(self, body, ...)
  if self.interrupt_idle then self.interrupt_idle() end
  self.lock:acquire()
  if self.pq == nil then
    self.lock:release()
    return nil, "connection is closed", CLOSED
  end
  local r = pack(pcall(body, self, ...))
  if not r[1] and self.pq and self.inflight then
    pcall(sched.shield, cancel_and_drain, self)
  end
  self.inflight = false
  self.lock:release()
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

-- One statement: send(pq) starts it; returns its rows or nil, msg, code.
local function statement(self, send, ...)
  if not send(self.pq, ...) then return lost(self) end
  self.inflight = true
  local sent, m, c = flush_all(self)
  if not sent then return nil, m, c end
  local res, m2, c2 = read_results(self)
  self.inflight = false
  if not res then return nil, m2, c2 end
  return shape(self, res)
end

-- Connecting --------------------------------------------------------------

local function new_connection(pq, opts)
  return setmetatable({
    pq = pq, lock = sync.lock(), listeners = {}, next_statement = 0,
    savepoints = 0, decode_json = opts.json ~= false,
  }, Connection)
end

local function start_connection(conninfo, opts)
  local pq, msg = core.pg_connect_start(conninfo)
  if not pq then return nil, msg, CONNECT_FAILED end
  local conn = new_connection(pq, opts)
  local r = pack(pcall(function()
    local want = "w" -- libpq: wait for writing first
    while true do
      local ok, m, c = await_io(conn, want)
      if not ok then return nil, m, c end
      local state, m2 = pq:connect_poll()
      if state == "ok" then return conn end
      if state == nil then return nil, m2, CONNECT_FAILED end
      want = state
    end
  end))
  if r[1] and r[2] then return conn end
  conn:close()
  if not r[1] then error(r[2], 0) end
  return nil, r[3], r[4] == LOST and CONNECT_FAILED or r[4]
end

local function conninfo_string(info, n, name)
  if type(info) == "string" then return info end
  if type(info) ~= "table" then
    argerror(n, name, "string or table expected, got " .. type(info), 3)
  end
  local parts = {}
  for k, v in pairs(info) do
    if type(k) ~= "string" then
      argerror(n, name, "conninfo keys must be strings", 3)
    end
    parts[#parts + 1] = k .. "='" ..
      tostring(v):gsub("\\", "\\\\"):gsub("'", "\\'") .. "'"
  end
  table.sort(parts)
  return table.concat(parts, " ")
end

local CONNECT_OPTIONS = { "timeout", "json" }

--- Connects to a PostgreSQL server. `conninfo` is a libpq connection
--- string ("host=127.0.0.1 port=5432 dbname=app") or URI, or a table of
--- its keywords. `opts.timeout`: seconds for the whole connect;
--- `opts.json = false` leaves json columns as text.
---@param conninfo string|table
---@param opts {timeout: number?, json: boolean?}|nil
---@return synchro.pg.Connection|nil
---@return string|nil message
---@return string|nil code SQLSTATE-style ("08001") or "ETIMEDOUT"
function pg.connect(conninfo, opts)
  conninfo = conninfo_string(conninfo, 1, "connect")
  opts = check_opts(opts, 2, "connect", CONNECT_OPTIONS)
  local seconds = check.time(opts.timeout, 2, "connect", "timeout")
  if seconds then
    return sched.timeout(seconds, start_connection, conninfo, opts)
  end
  return start_connection(conninfo, opts)
end

-- Statements --------------------------------------------------------------

-- query and execute: `text` (SQL, or a prepared statement's name) and
-- its parameters, sent with the pq method `send`.
local function with_params(self, name, send, text, ...)
  check_open(self, name)
  check.type(text, "string", 2, name)
  local p = params(name, 2, ...)
  return run(self, statement, function(pq)
    return pq[send](pq, text, unpack(p, 1, p.n))
  end)
end

--- Runs one statement with `$1`, `$2`, ... parameters: nil and pg.null are
--- NULL; booleans, numbers and strings are sent as text (a string with a
--- zero byte, or pg.bytea(s), as binary); a plain table as JSON. Returns
--- the rows, each a table keyed by column name, with integers, floats,
--- booleans, bytea as strings, json decoded, numeric and other types as
--- text, NULL as pg.null. A server error gives nil, message, SQLSTATE.
---@param sql string
---@param ... any parameters
---@return synchro.pg.Rows|nil
---@return string|nil message
---@return string|nil code
function Connection:query(sql, ...)
  return with_params(self, "query", "send", sql, ...)
end

--- Runs a script of one or more statements without parameters (simple
--- query protocol); returns the rows of the last one.
---@param sql string
---@return synchro.pg.Rows|nil
---@return string|nil message
---@return string|nil code
function Connection:exec(sql)
  check_open(self, "exec")
  check.type(sql, "string", 2, "exec")
  return run(self, statement, function(pq) return pq:send_simple(sql) end)
end

---@class synchro.pg.Statement
---@field name string
local Statement = {}
Statement.__index = Statement

--- Prepares `sql` on the server under `name` (nil: a fresh name). Returns
--- a statement whose `:execute(...)` runs it, or nil, message, SQLSTATE.
---@param name string|nil
---@param sql string
---@return synchro.pg.Statement|nil
---@return string|nil message
---@return string|nil code
function Connection:prepare(name, sql)
  check_open(self, "prepare")
  if name == nil then
    self.next_statement = self.next_statement + 1
    name = "synchro_" .. self.next_statement
  end
  check.type(name, "string", 2, "prepare")
  check.type(sql, "string", 3, "prepare")
  local ok, msg, code = run(self, statement, function(pq)
    return pq:send_prepare(name, sql)
  end)
  if not ok then return nil, msg, code end
  return setmetatable({ conn = self, name = name }, Statement)
end

--- Runs the prepared statement `name` with parameters (as in query).
---@param name string
---@param ... any
---@return synchro.pg.Rows|nil
---@return string|nil message
---@return string|nil code
function Connection:execute(name, ...)
  return with_params(self, "execute", "send_prepared", name, ...)
end

--- Runs the statement with parameters (as in query).
---@param ... any
---@return synchro.pg.Rows|nil
---@return string|nil message
---@return string|nil code
function Statement:execute(...)
  return self.conn:execute(self.name, ...)
end

--- Frees the statement on the server (DEALLOCATE).
---@return synchro.pg.Rows|nil
---@return string|nil message
---@return string|nil code
function Statement:close()
  local conn = self.conn
  if conn.pq == nil then return true end
  return conn:exec("DEALLOCATE " .. conn.pq:escape_identifier(self.name))
end

--- Runs `fn(conn)` in a transaction: commits when fn returns (and returns
--- its results), rolls back when it raises (and raises the error again).
--- If a statement failed inside (the transaction is aborted), it rolls
--- back and returns nil, message, "25P02". Nested calls use savepoints.
---@param fn async fun(conn: synchro.pg.Connection): ...
---@return ...
function Connection:transaction(fn)
  check_open(self, "transaction")
  check.type(fn, "function", 2, "transaction")
  local status = self.pq:transaction_status()
  local begin, commit, rollback
  if status == "intrans" or status == "inerror" then
    self.savepoints = self.savepoints + 1
    local sp = "synchro_sp_" .. self.savepoints
    begin, commit, rollback = "SAVEPOINT " .. sp, "RELEASE SAVEPOINT " .. sp,
      "ROLLBACK TO SAVEPOINT " .. sp
  else
    begin, commit, rollback = "BEGIN", "COMMIT", "ROLLBACK"
  end
  local ok, msg, code = self:exec(begin)
  if not ok then return nil, msg, code end
  local r = pack(pcall(fn, self))
  if self.pq == nil then
    if not r[1] then error(r[2], 0) end
    return nil, "connection is closed", CLOSED
  end
  if r[1] and self.pq:transaction_status() ~= "inerror" then
    ok, msg, code = self:exec(commit)
    if not ok then return nil, msg, code end
    return unpack(r, 2, r.n)
  end
  -- roll back even in a cancelled task: the rollback itself must wait
  pcall(sched.shield, function() self:exec(rollback) end)
  if not r[1] then error(r[2], 0) end
  return nil, "transaction rolled back: a statement in it failed", "25P02"
end

--- Runs many statements in one round trip (libpq's pipeline mode).
--- `list` holds { sql, param1, param2, ... } entries (pg.null for NULL).
--- Returns a list with, for each statement, its rows or a table
--- { error = message, code = SQLSTATE }; a statement after a failed one
--- fails with code "25P02" (the pipeline is aborted up to its end).
---@param list table[]
---@return table[]|nil
---@return string|nil message
---@return string|nil code
function Connection:pipeline(list)
  check_open(self, "pipeline")
  check.type(list, "table", 2, "pipeline")
  if self.pq.pipeline == nil then
    error("pipeline mode needs libpq 14 or later", 2)
  end
  local sends = {}
  for i = 1, #list do
    local q = list[i]
    if type(q) ~= "table" or type(q[1]) ~= "string" then
      argerror(2, "pipeline", ("entry %d: { sql, ... } expected"):format(i))
    end
    sends[i] = params("pipeline", 0, unpack(q, 2, #q))
    sends[i].sql = q[1]
  end
  return run(self, function()
    local pq = self.pq
    if not pq:pipeline(true) then return lost(self) end
    self.in_pipeline, self.inflight = true, true
    for i = 1, #sends do
      local p = sends[i]
      if not pq:send(p.sql, unpack(p, 1, p.n)) then return lost(self) end
    end
    if not pq:pipeline_sync() then return lost(self) end
    local sent, m, c = flush_all(self)
    if not sent then return nil, m, c end
    local out = {}
    for i = 1, #sends do
      local res, msg, code = read_results(self)
      if res then
        out[i] = shape(self, res)
      elseif code == LOST or code == CLOSED then
        return nil, msg, code
      else
        out[i] = { error = msg, code = code }
      end
    end
    local sync_res, m2, c2 = read_results(self)
    if not (sync_res and sync_res.status == "PGRES_PIPELINE_SYNC") then
      return nil, m2 or "pipeline out of step", c2 or LOST
    end
    self.inflight = false
    if not pq:pipeline(false) then return lost(self) end
    self.in_pipeline = false
    return out
  end)
end

-- LISTEN / NOTIFY ---------------------------------------------------------

---@class synchro.pg.Notification
---@field channel string
---@field payload string
---@field pid integer the notifying backend

-- Waits for a notification for queue q: reads the socket while no
-- statement runs; a statement interrupts the wait and takes its turn.
local function next_notification(self, q)
  while true do
    if #q > 0 then return table.remove(q, 1) end
    if self.pq == nil then return nil, "connection is closed", CLOSED end
    self.lock:acquire()
    local r = pack(pcall(function()
      if #q > 0 or self.pq == nil then return true end
      local ok, m, c = await_io(self, "r", nil, true)
      if ok then
        if not self.pq:consume() then return lost(self) end
        collect(self)
      end
      return ok ~= nil, m, c
    end))
    self.lock:release()
    if not r[1] then error(r[2], 0) end
    if not r[2] then return nil, r[3], r[4] end
  end
end

--- Listens on `channel` (its exact name: LISTEN with a quoted identifier)
--- and returns an iterator over its notifications: each call waits for
--- the next one; nil, message, code ends it when the connection fails or
--- is closed. Statements may run on the connection meanwhile. The fourth
--- value closes the iterator (a `for` loop on 5.4 does so when left);
--- the connection stays LISTENing until `UNLISTEN`.
---@param channel string
---@return (async fun(): synchro.pg.Notification|nil)|nil
---@return any
---@return any
---@return any closer
function Connection:listen(channel)
  check_open(self, "listen")
  check.type(channel, "string", 2, "listen")
  local queues = self.listeners[channel] or {}
  local q = {}
  queues[q] = true
  self.listeners[channel] = queues
  local ok, msg, code = self:exec("LISTEN " ..
    self.pq:escape_identifier(channel))
  if not ok then
    queues[q] = nil
    return nil, msg, code
  end
  local function stop() queues[q] = nil end
  local closer = setmetatable({ close = stop }, { __close = stop })
  return function() return next_notification(self, q) end, nil, nil, closer
end

-- Life cycle --------------------------------------------------------------

--- Closes the connection (safe to call twice). A statement waiting on it
--- returns nil, "connection is closed", "08003"; later calls raise.
function Connection:close()
  local pq = self.pq
  if pq == nil then return end
  self.pq = nil
  pq:close()
  local w = self.waiter
  if w then w.task.sched:wake(w.task, w.token) end
end
Connection.__close = Connection.close

--- Whether the connection is open and healthy.
---@return boolean
function Connection:ok()
  return self.pq ~= nil and self.pq:status() == "ok"
end

--- The server process id of the connection (for pg_terminate_backend and
--- notifications' pid), or nil once closed.
---@return integer|nil
function Connection:backend_pid()
  return self.pq and self.pq:backend_pid()
end

-- Pools -------------------------------------------------------------------

---@class synchro.pg.Pool
local Pool = {}
Pool.__index = Pool
pg.Pool = Pool

local POOL_OPTIONS = { "size", "timeout", "json" }

--- A pool of at most `opts.size` (default 10) connections, opened when
--- needed and reused. `opts.timeout` and `opts.json` are given to connect.
---@param conninfo string|table
---@param opts {size: integer?, timeout: number?, json: boolean?}|nil
---@return synchro.pg.Pool
function pg.pool(conninfo, opts)
  conninfo = conninfo_string(conninfo, 1, "pool")
  opts = check_opts(opts, 2, "pool", POOL_OPTIONS)
  local size = opts.size or 10
  if type(size) ~= "number" or size % 1 ~= 0 or size < 1 then
    argerror(2, "pool", "size: positive integer expected")
  end
  check.time(opts.timeout, 2, "pool", "timeout")
  return setmetatable({
    conninfo = conninfo, size = size,
    connect_opts = { timeout = opts.timeout, json = opts.json },
    idle = {}, permits = sync.semaphore(size), closed = false,
  }, Pool)
end

local function check_pool(self, name)
  if getmetatable(self) ~= Pool then
    argerror(1, name, "pool expected, got " .. type(self), 3)
  end
  if self.closed then argerror(1, name, "pool is closed", 3) end
end

--- Takes a connection (waiting while all are in use); give it back with
--- `pool:release(conn)`. Returns nil, message, code if connecting failed.
---@return synchro.pg.Connection|nil
---@return string|nil message
---@return string|nil code
function Pool:acquire()
  check_pool(self, "acquire")
  self.permits:acquire()
  while #self.idle > 0 do
    local c = table.remove(self.idle)
    if c:ok() then return c end
    c:close()
  end
  local r = pack(pcall(pg.connect, self.conninfo, self.connect_opts))
  if not (r[1] and r[2]) then self.permits:release() end
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

--- Gives back a connection taken with acquire: kept if it is healthy and
--- outside a transaction, else closed.
---@param conn synchro.pg.Connection
function Pool:release(conn)
  if getmetatable(conn) ~= Connection then
    argerror(1, "release", "connection expected, got " .. type(conn))
  end
  if not self.closed and conn:ok() and
      conn.pq:transaction_status() == "idle" then
    self.idle[#self.idle + 1] = conn
  else
    conn:close()
  end
  self.permits:release()
end

--- Runs `fn(conn, ...)` with a connection of the pool and gives it back
--- however fn ends; returns fn's results, or raises its error.
---@param fn async fun(conn: synchro.pg.Connection, ...): ...
---@return ...
function Pool:with(fn, ...)
  check_pool(self, "with")
  check.type(fn, "function", 2, "with")
  local conn, msg, code = self:acquire()
  if not conn then return nil, msg, code end
  local r = pack(pcall(fn, conn, ...))
  self:release(conn)
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

--- conn:query(sql, ...) on a connection of the pool.
---@param sql string
---@param ... any
---@return synchro.pg.Rows|nil
---@return string|nil message
---@return string|nil code
function Pool:query(sql, ...)
  check_pool(self, "query")
  check.type(sql, "string", 2, "query")
  return self:with(function(conn, ...) return conn:query(sql, ...) end, ...)
end

--- Closes the idle connections; those in use close when given back.
function Pool:close()
  self.closed = true
  for i = #self.idle, 1, -1 do
    self.idle[i]:close()
    self.idle[i] = nil
  end
end
Pool.__close = Pool.close

return pg
