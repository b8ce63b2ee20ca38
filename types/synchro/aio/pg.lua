---@meta synchro.aio.pg

---@class synchro.aio.pg
---@field null table SQL NULL in results and parameters (JSON null too)
---@field json boolean whether lua-cjson was found (json columns decoded)
---@field Connection synchro.pg.Connection the class of connections
---@field Pool synchro.pg.Pool the class of pools
local pg = {}

local Connection = {}
local Statement = {}
local Pool = {}

--- Marks the string s as binary data (bytea): it is sent in binary form
--- whatever it holds. Strings that hold a zero byte are sent this way on
--- their own.
---@param s string
---@return table
function pg.bytea(s) end

---@class synchro.pg.Connection

---@class synchro.pg.Rows: table[]
---@field fields string[] column names, in order
---@field command string the command tag ("INSERT 0 1")
---@field affected integer|nil rows affected (INSERT, UPDATE, DELETE, ...)

--- Connects to a PostgreSQL server. `conninfo` is a libpq connection
--- string ("host=127.0.0.1 port=5432 dbname=app") or URI, or a table of
--- its keywords. `opts.timeout`: seconds for the whole connect;
--- `opts.json = false` leaves json columns as text.
---@param conninfo string|table
---@param opts {timeout: number?, json: boolean?}|nil
---@return synchro.pg.Connection|nil
---@return string|nil message
---@return string|nil code SQLSTATE-style ("08001") or "ETIMEDOUT"
function pg.connect(conninfo, opts) end

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
function Connection:query(sql, ...) end

--- Runs a script of one or more statements without parameters (simple
--- query protocol); returns the rows of the last one.
---@param sql string
---@return synchro.pg.Rows|nil
---@return string|nil message
---@return string|nil code
function Connection:exec(sql) end

---@class synchro.pg.Statement
---@field name string

--- Prepares `sql` on the server under `name` (nil: a fresh name). Returns
--- a statement whose `:execute(...)` runs it, or nil, message, SQLSTATE.
---@param name string|nil
---@param sql string
---@return synchro.pg.Statement|nil
---@return string|nil message
---@return string|nil code
function Connection:prepare(name, sql) end

--- Runs the prepared statement `name` with parameters (as in query).
---@param name string
---@param ... any
---@return synchro.pg.Rows|nil
---@return string|nil message
---@return string|nil code
function Connection:execute(name, ...) end

--- Runs the statement with parameters (as in query).
---@param ... any
---@return synchro.pg.Rows|nil
---@return string|nil message
---@return string|nil code
function Statement:execute(...) end

--- Frees the statement on the server (DEALLOCATE).
---@return synchro.pg.Rows|nil
---@return string|nil message
---@return string|nil code
function Statement:close() end

--- Runs `fn(conn)` in a transaction: commits when fn returns (and returns
--- its results), rolls back when it raises (and raises the error again).
--- If a statement failed inside (the transaction is aborted), it rolls
--- back and returns nil, message, "25P02". Nested calls use savepoints.
---@param fn async fun(conn: synchro.pg.Connection): ...
---@return ...
function Connection:transaction(fn) end

--- Runs many statements in one round trip (libpq's pipeline mode).
--- `list` holds { sql, param1, param2, ... } entries (pg.null for NULL).
--- Returns a list with, for each statement, its rows or a table
--- { error = message, code = SQLSTATE }; a statement after a failed one
--- fails with code "25P02" (the pipeline is aborted up to its end).
---@param list table[]
---@return table[]|nil
---@return string|nil message
---@return string|nil code
function Connection:pipeline(list) end

---@class synchro.pg.Notification
---@field channel string
---@field payload string
---@field pid integer the notifying backend

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
function Connection:listen(channel) end

--- Closes the connection (safe to call twice). A statement waiting on it
--- returns nil, "connection is closed", "08003"; later calls raise.
function Connection:close() end

--- Whether the connection is open and healthy.
---@return boolean
function Connection:ok() end

--- The server process id of the connection (for pg_terminate_backend and
--- notifications' pid), or nil once closed.
---@return integer|nil
function Connection:backend_pid() end

---@class synchro.pg.Pool

--- A pool of at most `opts.size` (default 10) connections, opened when
--- needed and reused. `opts.timeout` and `opts.json` are given to connect.
---@param conninfo string|table
---@param opts {size: integer?, timeout: number?, json: boolean?}|nil
---@return synchro.pg.Pool
function pg.pool(conninfo, opts) end

--- Takes a connection (waiting while all are in use); give it back with
--- `pool:release(conn)`. Returns nil, message, code if connecting failed.
---@return synchro.pg.Connection|nil
---@return string|nil message
---@return string|nil code
function Pool:acquire() end

--- Gives back a connection taken with acquire: kept if it is healthy and
--- outside a transaction, else closed.
---@param conn synchro.pg.Connection
function Pool:release(conn) end

--- Runs `fn(conn, ...)` with a connection of the pool and gives it back
--- however fn ends; returns fn's results, or raises its error.
---@param fn async fun(conn: synchro.pg.Connection, ...): ...
---@return ...
function Pool:with(fn, ...) end

--- conn:query(sql, ...) on a connection of the pool.
---@param sql string
---@param ... any
---@return synchro.pg.Rows|nil
---@return string|nil message
---@return string|nil code
function Pool:query(sql, ...) end

--- Closes the idle connections; those in use close when given back.
function Pool:close() end

return pg
