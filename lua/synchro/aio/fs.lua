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

--- Flag bits for open() given as an integer (O_RDONLY, O_WRONLY, O_RDWR,
--- O_CREAT, O_EXCL, O_TRUNC, O_APPEND, O_SYNC, O_DSYNC, O_NOFOLLOW,
--- O_DIRECTORY, O_NONBLOCK; add them up to combine).
fs.constants = core.fs_flags

-- The C functions, called as fields of C so that their argument errors
-- name the function as the caller knows it: "bad argument #1 to 'open'".
local C = {
  open = core.fs_open, read = core.fs_read, write = core.fs_write,
  fstat = core.fs_fstat, fsync = core.fs_fsync, truncate = core.fs_ftruncate,
  close = core.fs_close, stat = core.fs_stat, lstat = core.fs_lstat,
  scandir = core.fs_scandir, mkdir = core.fs_mkdir, rmdir = core.fs_rmdir,
  unlink = core.fs_unlink, rename = core.fs_rename,
  realpath = core.fs_realpath, readlink = core.fs_readlink,
  symlink = core.fs_symlink, mkdtemp = core.fs_mkdtemp,
}

local function check_string(v, n, fname)
  if type(v) ~= "string" then
    error(("bad argument #%d to '%s' (string expected, got %s)")
      :format(n, fname, type(v)), 3)
  end
end

-- Permission bits: an integer, or an octal string such as "755".
local function perm(mode, n, fname)
  if type(mode) == "string" then
    local m = tonumber(mode, 8)
    if m == nil then
      error(("bad argument #%d to '%s' (octal permission bits expected, " ..
        "got '%s')"):format(n, fname, mode), 3)
    end
    return m
  end
  return mode
end

--- Begins a wait for a request: returns the task, a box that gets the
--- results, and the callback to give the request.
local function start(what)
  local task, token = sched.prepare("aio.fs." .. what)
  local box = {}
  return task, box, function(...)
    box.res = pack(...)
    task.sched:wake(task, token)
  end
end

--- Waits for the request that C.<op>(..., cb) started; returns its
--- results. A cancelled task abandons the request and raises at once.
local function finish(task, box, req, err, code)
  if not req then return nil, err, code end
  sched.suspend(task, function() req:cancel() end)
  local res = box.res
  return unpack(res, 1, res.n)
end

-- Files -------------------------------------------------------------------

---@class synchro.fs.File
local File = core.fs_file_methods

--- Opens a file. `flags` is "r" (default), "r+", "w", "w+", "a", "a+"
--- ("x" after w or a: fail if the file exists; "b" is ignored), or an
--- integer of fs.constants bits; `mode` the permission bits of a new file
--- (default 438 = octal 666, less the umask), an integer or an octal
--- string such as "644". Returns a File (closed by file:close(), by
--- garbage collection, or as a `<close>` variable on Lua 5.4).
---@param path string
---@param flags? string|integer
---@param mode? integer|string
---@return synchro.fs.File|nil file
---@return string? err
---@return string? code
function fs.open(path, flags, mode)
  mode = perm(mode, 3, "open")
  local task, box, cb = start("open")
  local req, err, code = C.open(path, flags, mode, cb)
  local ok, file
  ok, file, err, code = ypcall(finish, task, box, req, err, code)
  if not ok then
    -- opened, but cancelled before this task ran again: close it now
    if box.res and box.res[1] then box.res[1]:close() end
    error(file, 0)
  end
  return file, err, code
end

--- Reads up to n bytes (default 65536) at offset (default: the current
--- position, which then advances). Returns a string, "" at the end of the
--- file. `file` is a File or a file descriptor.
---@param file synchro.fs.File|integer
---@param n? integer
---@param offset? integer
---@return string|nil data
---@return string? err
---@return string? code
function fs.read(file, n, offset)
  local task, box, cb = start("read")
  return finish(task, box, C.read(file, n, offset, cb))
end

--- Writes all of data at offset (default: the current position; files
--- opened with "a" always append). Returns the number of bytes written.
---@param file synchro.fs.File|integer
---@param data string
---@param offset? integer
---@return integer|nil written
---@return string? err
---@return string? code
function fs.write(file, data, offset)
  check_string(data, 2, "write")
  local total = #data
  local done = 0
  while true do
    local task, box, cb = start("write")
    local n, err, code = finish(task, box, C.write(file, data, offset, cb))
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
--- Closing a File twice does nothing. Returns true.
---@param file synchro.fs.File|integer
---@return true|nil ok
---@return string? err
---@return string? code
function fs.close(file)
  local ok, err, code = C.close(file)
  return ok, err, code
end

--- The metadata of an open file: see fs.stat.
---@param file synchro.fs.File|integer
---@return table|nil stat
---@return string? err
---@return string? code
function fs.fstat(file)
  local task, box, cb = start("fstat")
  return finish(task, box, C.fstat(file, cb))
end

--- Flushes the file's data and metadata to the disk. Returns true.
---@param file synchro.fs.File|integer
---@return true|nil ok
---@return string? err
---@return string? code
function fs.fsync(file)
  local task, box, cb = start("fsync")
  return finish(task, box, C.fsync(file, cb))
end

--- Cuts (or extends with zeros) the file to length bytes (default 0).
---@param file synchro.fs.File|integer
---@param length? integer
---@return true|nil ok
---@return string? err
---@return string? code
function fs.ftruncate(file, length)
  local task, box, cb = start("ftruncate")
  return finish(task, box, C.truncate(file, length, cb))
end

--- file:read(n [, offset]): see fs.read.
File.read = fs.read
--- file:write(data [, offset]): see fs.write.
File.write = fs.write
--- file:stat(): see fs.fstat.
File.stat = fs.fstat
--- file:sync(): see fs.fsync.
File.sync = fs.fsync
--- file:truncate([length]): see fs.ftruncate.
File.truncate = fs.ftruncate
-- file:close() and file:fileno() (the fd, nil once closed) are in C.

-- Paths -------------------------------------------------------------------

--- A path's metadata, following symbolic links: a table with type
--- ("file", "directory", "link", "fifo", "socket", "char", "block" or
--- "unknown"), size, mode (st_mode), perm (mode's permission bits), ino,
--- dev, rdev, nlink, uid, gid, blksize, blocks, and atime, mtime, ctime,
--- birthtime (seconds since the epoch, floats).
---@param path string
---@return table|nil stat
---@return string? err
---@return string? code
function fs.stat(path)
  local task, box, cb = start("stat")
  return finish(task, box, C.stat(path, cb))
end

--- Like stat, but a symbolic link describes itself (type "link").
---@param path string
---@return table|nil stat
---@return string? err
---@return string? code
function fs.lstat(path)
  local task, box, cb = start("lstat")
  return finish(task, box, C.lstat(path, cb))
end

--- The entries of a directory (without "." and ".."), as an array of
--- { name =, type = } (types as in stat).
---@param path string
---@return table[]|nil entries
---@return string? err
---@return string? code
function fs.scandir(path)
  local task, box, cb = start("scandir")
  return finish(task, box, C.scandir(path, cb))
end
--- Same as fs.scandir.
fs.readdir = fs.scandir

--- Creates a directory with permission bits mode (default octal 777, less
--- the umask). Returns true.
---@param path string
---@param mode? integer|string
---@return true|nil ok
---@return string? err
---@return string? code
function fs.mkdir(path, mode)
  mode = perm(mode, 2, "mkdir")
  local task, box, cb = start("mkdir")
  return finish(task, box, C.mkdir(path, mode, cb))
end

--- Removes an empty directory. Returns true.
---@param path string
---@return true|nil ok
---@return string? err
---@return string? code
function fs.rmdir(path)
  local task, box, cb = start("rmdir")
  return finish(task, box, C.rmdir(path, cb))
end

--- Removes a file (or a symbolic link). Returns true.
---@param path string
---@return true|nil ok
---@return string? err
---@return string? code
function fs.unlink(path)
  local task, box, cb = start("unlink")
  return finish(task, box, C.unlink(path, cb))
end

--- Renames (moves) from to to, replacing to if it exists. Returns true.
---@param from string
---@param to string
---@return true|nil ok
---@return string? err
---@return string? code
function fs.rename(from, to)
  local task, box, cb = start("rename")
  return finish(task, box, C.rename(from, to, cb))
end

--- The canonical absolute path (symbolic links resolved).
---@param path string
---@return string|nil path
---@return string? err
---@return string? code
function fs.realpath(path)
  local task, box, cb = start("realpath")
  return finish(task, box, C.realpath(path, cb))
end

--- The target of a symbolic link.
---@param path string
---@return string|nil target
---@return string? err
---@return string? code
function fs.readlink(path)
  local task, box, cb = start("readlink")
  return finish(task, box, C.readlink(path, cb))
end

--- Creates a symbolic link at path pointing to target. Returns true.
---@param target string
---@param path string
---@return true|nil ok
---@return string? err
---@return string? code
function fs.symlink(target, path)
  local task, box, cb = start("symlink")
  return finish(task, box, C.symlink(target, path, cb))
end

--- Creates a new directory with a unique name that starts with prefix
--- (six random characters are appended, unless prefix already ends with
--- "XXXXXX", which they replace) and returns its path.
---@param prefix string
---@return string|nil path
---@return string? err
---@return string? code
function fs.mkdtemp(prefix)
  check_string(prefix, 1, "mkdtemp")
  if prefix:sub(-6) ~= "XXXXXX" then prefix = prefix .. "XXXXXX" end
  local task, box, cb = start("mkdtemp")
  return finish(task, box, C.mkdtemp(prefix, cb))
end

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
function Watch:close()
  if self.handle then
    self.handle:close()
    self.handle = nil
    self.q:close()
  end
end
Watch.__close = Watch.close

return fs
