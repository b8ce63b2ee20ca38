---@meta synchro.aio.fs

---@class synchro.aio.fs
---@field Watch synchro.fs.Watch the class of watchers (see fs.watch)
local fs = {}

--- Flag bits for open() given as an integer (O_RDONLY, O_WRONLY, O_RDWR,
--- O_CREAT, O_EXCL, O_TRUNC, O_APPEND, O_SYNC, O_DSYNC, O_NOFOLLOW,
--- O_DIRECTORY, O_NONBLOCK; add them up to combine).
---@type table<string, integer>
fs.constants = {}

---@class synchro.fs.File
local File = {}

--- Closes the file (also done by garbage collection, or as a `<close>`
--- variable on Lua 5.4).
---@return true|nil ok
---@return string? err
---@return string? code
function File:close() end

--- The file descriptor, or nil once closed.
---@return integer|nil
function File:fileno() end

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
function fs.open(path, flags, mode) end

--- Reads up to n bytes (default 65536) at offset (default: the current
--- position, which then advances). Returns a string, "" at the end of the
--- file. `file` is a File or a file descriptor.
---@param file synchro.fs.File|integer
---@param n? integer
---@param offset? integer
---@return string|nil data
---@return string? err
---@return string? code
function fs.read(file, n, offset) end

--- Writes all of data at offset (default: the current position; files
--- opened with "a" always append). Returns the number of bytes written.
---@param file synchro.fs.File|integer
---@param data string
---@param offset? integer
---@return integer|nil written
---@return string? err
---@return string? code
function fs.write(file, data, offset) end

--- Closes a File (or a file descriptor) without waiting: a synchronous
--- close(2) on the loop thread. A File that a request still uses (a task
--- was cancelled during a read, say) is closed when that request ends.
--- Closing a File twice does nothing. Returns true.
---@param file synchro.fs.File|integer
---@return true|nil ok
---@return string? err
---@return string? code
function fs.close(file) end

--- The metadata of an open file: see fs.stat.
---@param file synchro.fs.File|integer
---@return table|nil stat
---@return string? err
---@return string? code
function fs.fstat(file) end

--- Flushes the file's data and metadata to the disk. Returns true.
---@param file synchro.fs.File|integer
---@return true|nil ok
---@return string? err
---@return string? code
function fs.fsync(file) end

--- Cuts (or extends with zeros) the file to length bytes (default 0).
---@param file synchro.fs.File|integer
---@param length? integer
---@return true|nil ok
---@return string? err
---@return string? code
function fs.ftruncate(file, length) end

--- file:read(n [, offset]): see fs.read.
---@param n? integer
---@param offset? integer
---@return string|nil data
---@return string? err
---@return string? code
function File:read(n, offset) end

--- file:write(data [, offset]): see fs.write.
---@param data string
---@param offset? integer
---@return integer|nil written
---@return string? err
---@return string? code
function File:write(data, offset) end

--- file:stat(): see fs.fstat.
---@return table|nil stat
---@return string? err
---@return string? code
function File:stat() end

--- file:sync(): see fs.fsync.
---@return true|nil ok
---@return string? err
---@return string? code
function File:sync() end

--- file:truncate([length]): see fs.ftruncate.
---@param length? integer
---@return true|nil ok
---@return string? err
---@return string? code
function File:truncate(length) end

--- A path's metadata, following symbolic links: a table with type
--- ("file", "directory", "link", "fifo", "socket", "char", "block" or
--- "unknown"), size, mode (st_mode), perm (mode's permission bits), ino,
--- dev, rdev, nlink, uid, gid, blksize, blocks, and atime, mtime, ctime,
--- birthtime (seconds since the epoch, floats).
---@param path string
---@return table|nil stat
---@return string? err
---@return string? code
function fs.stat(path) end

--- Like stat, but a symbolic link describes itself (type "link").
---@param path string
---@return table|nil stat
---@return string? err
---@return string? code
function fs.lstat(path) end

--- The entries of a directory (without "." and ".."), as an array of
--- { name =, type = } (types as in stat).
---@param path string
---@return table[]|nil entries
---@return string? err
---@return string? code
function fs.scandir(path) end

--- Same as fs.scandir.
---@param path string
---@return table[]|nil entries
---@return string? err
---@return string? code
function fs.readdir(path) end

--- Creates a directory with permission bits mode (default octal 777, less
--- the umask). Returns true.
---@param path string
---@param mode? integer|string
---@return true|nil ok
---@return string? err
---@return string? code
function fs.mkdir(path, mode) end

--- Removes an empty directory. Returns true.
---@param path string
---@return true|nil ok
---@return string? err
---@return string? code
function fs.rmdir(path) end

--- Removes a file (or a symbolic link). Returns true.
---@param path string
---@return true|nil ok
---@return string? err
---@return string? code
function fs.unlink(path) end

--- Renames (moves) from to to, replacing to if it exists. Returns true.
---@param from string
---@param to string
---@return true|nil ok
---@return string? err
---@return string? code
function fs.rename(from, to) end

--- The canonical absolute path (symbolic links resolved).
---@param path string
---@return string|nil path
---@return string? err
---@return string? code
function fs.realpath(path) end

--- The target of a symbolic link.
---@param path string
---@return string|nil target
---@return string? err
---@return string? code
function fs.readlink(path) end

--- Creates a symbolic link at path pointing to target. Returns true.
---@param target string
---@param path string
---@return true|nil ok
---@return string? err
---@return string? code
function fs.symlink(target, path) end

--- Creates a new directory with a unique name that starts with prefix
--- (six random characters are appended, unless prefix already ends with
--- "XXXXXX", which they replace) and returns its path.
---@param prefix string
---@return string|nil path
---@return string? err
---@return string? code
function fs.mkdtemp(prefix) end

--- The whole content of a file.
---@param path string
---@return string|nil data
---@return string? err
---@return string? code
function fs.readfile(path) end

--- Replaces the content of a file (created if needed, with mode, default
--- octal 666 less the umask). Returns true.
---@param path string
---@param data string
---@param mode? integer|string
---@return true|nil ok
---@return string? err
---@return string? code
function fs.writefile(path, data, mode) end

local Watch = {}

---@class synchro.fs.Event
---@field path string the file that changed (the watched path joined with name)
---@field name string|nil the name libuv reported, relative to a watched directory
---@field change "rename"|"change"

--- A watch on a file or directory: iterate it, or call `next([timeout])`.
---@class synchro.fs.Watch

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
function fs.watch(path, opts) end

--- The next change event, waiting up to `timeout` seconds (default: no
--- limit). Returns the event; nil once closed; nil, message, name on a
--- watch error or a timeout ("ETIMEDOUT").
---@param timeout? number
---@return synchro.fs.Event|nil event
---@return string? err
---@return string? code
function Watch:next(timeout) end

--- The iterator step: the next event, nil once closed (raises on a
--- watch error, since a `for` loop cannot return one).
function Watch:__call() end

--- Stops watching; a waiting task gets nil. Safe to call twice.
function Watch:close() end

return fs
