--- synchro.aio.fs: files and directories for async code on a
--- synchronizer's loop (libuv's threadpool does the system calls, so the
--- loop never blocks on the disk).
---
--- I/O failures return `nil, "ENOENT: no such file or directory",
--- "ENOENT"`; misuse raises. Cancellation: a task cancelled while it waits
--- for a request raises the cancellation at once. The request is
--- abandoned: libuv drops it if it has not started yet; otherwise it runs
--- to its end on the threadpool and its result is discarded (a file that
--- an abandoned open() opened is closed; an abandoned write may have
--- written its data).
local core = require "synchro.core"
local sched = require "synchro.sched"
local request = require "synchro.aio.request"

local fs = {}

local pack = sched.pack
local unpack = table.unpack or unpack
local ypcall = sched.yieldable_pcalls()
local await = request.await
local argerror = require("synchro.check").argerror

--- Flag bits for open() given as an integer (O_RDONLY, O_WRONLY, O_RDWR,
--- O_CREAT, O_EXCL, O_TRUNC, O_APPEND, O_SYNC, O_DSYNC, O_NOFOLLOW,
--- O_DIRECTORY, O_NONBLOCK; add them up to combine).
fs.constants = core.fs_flags

local function check_string(v, n, fname)
  if type(v) ~= "string" then
    argerror(n, fname, "string expected, got " .. type(v))
  end
end

-- Permission bits: an integer, or an octal string such as "755".
local function perm(mode, n, fname)
  if type(mode) == "string" then
    local m = tonumber(mode, 8)
    if m == nil then
      argerror(n, fname, "octal permission bits expected, got '" .. mode ..
        "'")
    end
    return m
  end
  return mode
end

-- The requests, one line each: the name (fs.<name>), the C function, its
-- arguments before the callback, and what is done to them first. The
-- API's documentation is in types/synchro/aio/fs.lua and docs/aio-fs.md.
local requests = {
  { "read", core.fs_read, 3 },      -- (file, n, offset) -> string
  { "fstat", core.fs_fstat, 1 },    -- (file) -> stat table
  { "fsync", core.fs_fsync, 1 },    -- (file) -> true
  { "ftruncate", core.fs_ftruncate, 2 }, -- (file, length) -> true
  { "stat", core.fs_stat, 1 },      -- (path) -> stat table
  { "lstat", core.fs_lstat, 1 },    -- (path) -> stat table
  { "scandir", core.fs_scandir, 1 }, -- (path) -> { {name=, type=} ... }
  { "rmdir", core.fs_rmdir, 1 },    -- (path) -> true
  { "unlink", core.fs_unlink, 1 },  -- (path) -> true
  { "realpath", core.fs_realpath, 1 }, -- (path) -> path
  { "readlink", core.fs_readlink, 1 }, -- (path) -> target
  { "rename", core.fs_rename, 2 },  -- (from, to) -> true
  { "symlink", core.fs_symlink, 2 }, -- (target, path) -> true
  { "mkdir", core.fs_mkdir, 2,      -- (path, mode) -> true
    prepare = function(path, mode) return path, perm(mode, 2, "mkdir") end },
  { "mkdtemp", core.fs_mkdtemp, 1,  -- (prefix) -> path
    prepare = function(prefix)
      check_string(prefix, 1, "mkdtemp")
      if prefix:sub(-6) ~= "XXXXXX" then prefix = prefix .. "XXXXXX" end
      return prefix
    end },
  -- with a function of their own below
  { "open", core.fs_open, 3, own = true }, -- (path, flags, mode) -> File
  { "write", core.fs_write, 3, own = true }, -- (file, data, offset) -> n
}

-- The function that starts a request: start(cb, a, b, c) calls the C
-- function as C.<name>(a, b, c, cb), so that its argument errors name
-- the function as the caller knows it ("bad argument #1 to 'stat'").
-- Generated because Lua names a function in errors by its call site.
local C = { close = core.fs_close }
local own = debug.getinfo(1, "S").source
local function starter(name, nargs)
  local args = ("a, b, c, d"):sub(1, 3 * nargs - 2)
  -- not a tail call: LuaJIT would name the caller's caller
  local code = ("local C = ...\nreturn function(cb, %s) " ..
    "local r, m, c = C.%s(%s, cb) return r, m, c end"):format(args, name,
    args)
  return assert((loadstring or load)(code, own))(C)
end

-- Starters for the requests that have a function of their own below.
local start = {}

for i = 1, #requests do
  local name, fn, nargs = requests[i][1], requests[i][2], requests[i][3]
  local prepare = requests[i].prepare
  local what = "aio.fs." .. name
  local begin = starter(name, nargs)
  C[name] = fn
  start[name] = begin
  if not requests[i].own then
    if prepare then
      fs[name] = function(...)
        return await(what, begin, nil, nil, prepare(...))
      end
    elseif nargs == 1 then
      fs[name] = function(a) return await(what, begin, nil, nil, a) end
    else
      fs[name] = function(a, b, c)
        return await(what, begin, nil, nil, a, b, c)
      end
    end
  end
end
--- Same as fs.scandir.
fs.readdir = fs.scandir

local function close_file(file)
  if file then file:close() end
end

--- Opens a file; see types/synchro/aio/fs.lua. An open that completes
--- after its task was cancelled closes the file it opened.
function fs.open(path, flags, mode)
  mode = perm(mode, 3, "open")
  return await("aio.fs.open", start.open, nil, close_file, path, flags,
    mode)
end

--- Writes all of data, however many requests that takes (a write may be
--- short).
function fs.write(file, data, offset)
  check_string(data, 2, "write")
  local total = #data
  local done = 0
  while true do
    local n, err, code = await("aio.fs.write", start.write, nil, nil, file,
      data, offset)
    if not n then return nil, err, code end
    done = done + n
    if done >= total or n == 0 then break end
    -- a short write: write the rest
    data = data:sub(n + 1)
    if offset then offset = offset + n end
  end
  return done
end

--- Closes a File (or a file descriptor) without waiting: a synchronous
--- close(2) on the loop thread. A File that a request still uses (a task
--- was cancelled during a read, say) is closed when that request ends.
function fs.close(file)
  local ok, err, code = C.close(file)
  return ok, err, code
end

---@class synchro.fs.File
local File = core.fs_file_methods
File.read = fs.read
File.write = fs.write
File.stat = fs.fstat
File.sync = fs.fsync
File.truncate = fs.ftruncate
-- file:close() and file:fileno() (the fd, nil once closed) are in C.

-- Whole files -------------------------------------------------------------

--- The whole content of a file.
---@param path string
---@return string|nil data
---@return string? err
---@return string? code
function fs.readfile(path)
  check_string(path, 1, "readfile")
  local f, err, code = fs.open(path, "r")
  if not f then return nil, err, code end
  local r = pack(ypcall(function()
    local chunks = {}
    local st = f:stat()
    local size = st and st.size or 0
    -- a regular file in one read (+1 to see its end), others by chunks
    local n = size > 0 and size + 1 or 65536
    while true do
      local data, e, c = f:read(n)
      if not data then return nil, e, c end
      if data == "" then break end
      chunks[#chunks + 1] = data
      n = 65536
    end
    return table.concat(chunks)
  end))
  f:close()
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

--- Replaces the content of a file (created if needed, with mode, default
--- octal 666 less the umask). Returns true.
---@param path string
---@param data string
---@param mode? integer|string
---@return true|nil ok
---@return string? err
---@return string? code
function fs.writefile(path, data, mode)
  check_string(path, 1, "writefile")
  check_string(data, 2, "writefile")
  local f, err, code = fs.open(path, "w", perm(mode, 3, "writefile"))
  if not f then return nil, err, code end
  local ok, n
  ok, n, err, code = ypcall(f.write, f, data)
  if not ok then
    f:close()
    error(n, 0)
  end
  if not n then
    f:close()
    return nil, err, code
  end
  return f:close()
end

-- Watching ------------------------------------------------------------------

---@class synchro.fs.Event
---@field path string the file that changed (the watched path joined with name)
---@field name string|nil the name libuv reported, relative to a watched directory
---@field change "rename"|"change"

--- A watch on a file or directory: iterate it, or call `next([timeout])`.
---@class synchro.fs.Watch
local Watch = {}
Watch.__index = Watch
fs.Watch = Watch

local watch_options = { "recursive" }

--- Watches a file or a directory for changes (uv_fs_event). Returns a
--- Watch, which is also the iterator, its state and its to-be-closed
--- value, so `for ev in fs.watch(dir) do ... end` yields events
--- `{ path =, name =, change = "rename"|"change" }` and `break` closes it
--- on Lua 5.4; `w:close()` does on every version (PUC Lua 5.1 cannot
--- yield in a `for` iterator: use `w:next()` there). A creation, deletion
--- or rename shows as "rename", a write as "change"; the system may
--- coalesce events. `recursive` watches subdirectories too where libuv
--- supports it (macOS, Windows; not Linux's inotify, where only the
--- directory itself is watched). Returns nil, message, name if the path
--- cannot be watched (e.g. ENOENT).
---@param path string
---@param opts? { recursive: boolean? }
---@return synchro.fs.Watch|nil watch
---@return string|nil err
---@return string|nil code
---@return synchro.fs.Watch|nil closing
function fs.watch(path, opts)
  check_string(path, 1, "watch")
  opts = require("synchro.check").opts(opts, 2, "watch", watch_options)
  local q = request.queue()
  local base = path:gsub("/+$", "")
  if base == "" then base = "/" end
  local handle, err, code = core.fs_watch(path, opts.recursive,
    function(name, events, failed)
      if failed then
        q:push({ err = failed })
        return
      end
      local full = name and (base == "/" and "/" .. name or
        base .. "/" .. name) or path
      -- both bits: a rename and a change of the same name
      if events % 2 == 1 then
        q:push({ path = full, name = name, change = "rename" })
      end
      if events >= 2 then
        q:push({ path = full, name = name, change = "change" })
      end
    end)
  if not handle then return nil, err, code end
  local w = setmetatable({ handle = handle, q = q, path = path }, Watch)
  return w, nil, nil, w
end

--- The next change event, waiting up to `timeout` seconds (default: no
--- limit). Returns the event; nil once closed; nil, message, name on a
--- watch error or a timeout ("ETIMEDOUT").
---@param timeout? number
---@return synchro.fs.Event|nil event
---@return string? err
---@return string? code
function Watch:next(timeout)
  if getmetatable(self) ~= Watch then
    error("bad argument #1 to 'next' (watch expected, got " ..
      type(self) .. ")", 2)
  end
  timeout = require("synchro.check").time(timeout, 1, "next", "timeout")
  local ev, err, code = self.q:pop("next", timeout)
  if ev and ev.err then
    return nil, ev.err .. ": watch failed", ev.err
  end
  return ev, err, code
end

--- The iterator step: the next event, nil once closed (raises on a
--- watch error, since a `for` loop cannot return one).
function Watch:__call()
  local ev, err = self:next()
  if err then error(err, 2) end
  return ev
end

--- Stops watching; a waiting task gets nil. Safe to call twice.
Watch.close = request.close_handle
Watch.__close = request.close_handle

return fs
