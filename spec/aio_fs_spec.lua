-- synchro.aio.fs: real files in a temp dir, on a synchronizer's loop.
local synchro = require "synchro"
local util = require "spec.helpers.util"

describe("synchro.aio.fs", function()
  local S, dir
  -- Open file descriptors of this process, counted from the loop.
  local fds, in_flight

  setup(function()
    S = synchro.new({ name = "aio-fs-spec" })
    dir = S:wrap(function()
      return assert(require("synchro.aio").fs.mkdtemp("/tmp/synchro-fs-"))
    end)()
    local count = S:wrap(function()
      collectgarbage()
      collectgarbage()
      local entries = assert(require("synchro.aio").fs.scandir("/proc/self/fd"))
      return #entries
    end)
    -- garbage of either VM (of other specs, too) may hold descriptors
    fds = function()
      collectgarbage()
      collectgarbage()
      return count()
    end
    in_flight = S:wrap(function() return require("synchro.core").requests_pending() end)
  end)

  teardown(function()
    -- fs itself removes the tree (scandir, unlink, rmdir)
    local removed = S:wrap(function(path)
      local fs = require("synchro.aio").fs
      local function rmtree(p)
        local entries = assert(fs.scandir(p))
        for _, e in ipairs(entries) do
          local child = p .. "/" .. e.name
          if e.type == "directory" then rmtree(child)
          else assert(fs.unlink(child)) end
        end
        assert(fs.rmdir(p))
      end
      rmtree(path)
      return fs.stat(path) == nil
    end)(dir)
    S:close()
    assert.is_true(removed)
    os.execute("rm -rf " .. dir) -- in case the assertion above failed
  end)

  local function run(fn, ...) return S:wrap(fn)(...) end

  it("writes, reads and stats whole files", function()
    local before = fds()
    local ok, data, st, big = run(function(d)
      local fs = require("synchro.aio").fs
      local ok = fs.writefile(d .. "/a.txt", "hello\0world")
      local data = fs.readfile(d .. "/a.txt")
      local st = fs.stat(d .. "/a.txt")
      local chunk = ("0123456789abcdef"):rep(65536) -- 1 MiB
      assert(fs.writefile(d .. "/big", chunk))
      return ok, data, st, fs.readfile(d .. "/big") == chunk
    end, dir)
    assert.is_true(ok)
    assert.are.equal("hello\0world", data)
    assert.are.equal("file", st.type)
    assert.are.equal(11, st.size)
    assert.is_true(st.mtime > 1e9 and st.atime > 1e9 and st.ctime > 1e9)
    assert.is_true(math.abs(st.mtime - os.time()) < 60)
    assert.are.equal(32768, st.mode - st.perm) -- S_IFREG
    assert.is_true(st.ino > 0 and st.nlink == 1 and st.uid >= 0)
    assert.is_true(st.dev ~= nil and st.gid ~= nil and st.blocks ~= nil)
    assert.is_true(big)
    assert.are.equal(before, fds())
  end)

  it("reads files whose size stat does not know (/proc)", function()
    local status = run(function()
      return require("synchro.aio").fs.readfile("/proc/self/status")
    end)
    assert.matches("Name:", status)
    assert.is_true(#status > 100)
  end)

  it("returns nil, message, code for I/O errors", function()
    local r = run(function(d)
      local fs = require("synchro.aio").fs
      local out = {}
      local function add(...) out[#out + 1] = { ... } end
      add(fs.readfile(d .. "/missing"))
      add(fs.readfile(d)) -- a directory where a file was expected
      add(fs.writefile(d, "x"))
      add(fs.open(d .. "/missing/x", "w"))
      assert(fs.writefile(d .. "/plain", "x"))
      add(fs.mkdir(d .. "/plain/sub")) -- a file where a dir was expected
      add(fs.mkdir(d .. "/plain"))
      add(fs.open(d .. "/plain", "wx"))
      assert(fs.mkdir(d .. "/full"))
      assert(fs.writefile(d .. "/full/f", ""))
      add(fs.rmdir(d .. "/full"))
      add(fs.unlink(d .. "/nothing"))
      add(fs.rename(d .. "/nothing", d .. "/x"))
      add(fs.stat(d .. "/nothing"))
      add(fs.lstat(d .. "/nothing"))
      add(fs.scandir(d .. "/plain"))
      add(fs.realpath(d .. "/nothing"))
      add(fs.readlink(d .. "/plain"))
      add(fs.mkdtemp(d .. "/nothing/x"))
      local f = assert(fs.open(d .. "/plain", "r"))
      add(f:write("nope")) -- opened for reading only
      f:close()
      assert(fs.unlink(d .. "/full/f"))
      assert(fs.rmdir(d .. "/full"))
      assert(fs.unlink(d .. "/plain"))
      return out
    end, dir)
    local codes = {}
    for i, res in ipairs(r) do
      assert.is_nil(res[1])
      assert.are.equal(res[3], res[2]:match("^(E%u+): "), "result " .. i)
      codes[i] = res[3]
    end
    assert.are.same({ "ENOENT", "EISDIR", "EISDIR", "ENOENT", "ENOTDIR",
      "EEXIST", "EEXIST", "ENOTEMPTY", "ENOENT", "ENOENT", "ENOENT",
      "ENOENT", "ENOTDIR", "ENOENT", "EINVAL", "ENOENT", "EBADF" }, codes)
    assert.are.equal("ENOENT: no such file or directory", r[1][2])
  end)

  it("gives file objects: read, write, offsets, stat, sync, truncate",
    function()
      local before = fds()
      local r = run(function(d)
        local fs = require("synchro.aio").fs
        local out = {}
        local f = assert(fs.open(d .. "/obj", "w+", "600"))
        out.name = tostring(f):match("^synchro%.fs%.file %(fd %d+%)$") ~= nil
        out.fd = f:fileno()
        out.written = f:write("abcdefgh")
        out.at = f:read(3, 2) -- positional read
        out.eof = f:read(10, 8)
        assert(f:write("XY", 0)) -- positional write
        out.whole = f:read(100, 0)
        out.size = f:stat().size
        out.perm = f:stat().perm
        out.sync = f:sync()
        out.truncated = f:truncate(4)
        out.after = fs.readfile(d .. "/obj")
        -- the fs.* functions take a file or a raw descriptor
        out.raw = fs.read(f:fileno(), 2, 1)
        out.rawstat = fs.fstat(f:fileno()).size
        out.closed = f:close()
        out.again = f:close()
        out.fileno_closed = f:fileno()
        out.tostring_closed = tostring(f)
        local ok, err = pcall(f.read, f, 1)
        out.use_closed = not ok and err:match("attempt to use a closed file")
        -- appending
        local a = assert(fs.open(d .. "/obj", "a"))
        a:write("++")
        a:write("--", 0) -- O_APPEND: offsets do not matter on Linux
        a:close()
        out.appended = fs.readfile(d .. "/obj")
        assert(fs.unlink(d .. "/obj"))
        return out
      end, dir)
      assert.is_true(r.name)
      assert.is_true(r.fd > 2)
      assert.are.equal(8, r.written)
      assert.are.equal("cde", r.at)
      assert.are.equal("", r.eof)
      assert.are.equal("XYcdefgh", r.whole)
      assert.are.equal(8, r.size)
      assert.are.equal(384, r.perm) -- octal 600
      assert.is_true(r.sync)
      assert.is_true(r.truncated)
      assert.are.equal("XYcd", r.after)
      assert.are.equal("Yc", r.raw)
      assert.are.equal(4, r.rawstat)
      assert.is_true(r.closed)
      assert.is_true(r.again)
      assert.is_nil(r.fileno_closed)
      assert.are.equal("synchro.fs.file (closed)", r.tostring_closed)
      assert.is_truthy(r.use_closed)
      assert.are.equal("XYcd++--", r.appended)
      assert.are.equal(before, fds())
    end)

  it("manages directories, links and names", function()
    local r = run(function(d)
      local fs = require("synchro.aio").fs
      local out = {}
      out.mkdir = fs.mkdir(d .. "/tree", "700")
      out.perm = fs.stat(d .. "/tree").perm
      out.type = fs.stat(d .. "/tree").type
      assert(fs.writefile(d .. "/tree/f1", "1"))
      assert(fs.mkdir(d .. "/tree/sub"))
      out.symlink = fs.symlink("f1", d .. "/tree/link")
      out.link_type = fs.lstat(d .. "/tree/link").type
      out.followed = fs.stat(d .. "/tree/link").type
      out.readlink = fs.readlink(d .. "/tree/link")
      out.realpath = fs.realpath(d .. "/tree/sub/../link")
      out.realdir = fs.realpath(d)
      local entries = fs.scandir(d .. "/tree")
      table.sort(entries, function(a, b) return a.name < b.name end)
      out.entries = entries
      out.readdir = #fs.readdir(d .. "/tree")
      out.rename = fs.rename(d .. "/tree/f1", d .. "/tree/sub/f2")
      out.moved = fs.readfile(d .. "/tree/sub/f2")
      out.gone = fs.stat(d .. "/tree/f1")
      local tmp = fs.mkdtemp(d .. "/tmp-")
      out.tmp = tmp:match("/tmp%-%w%w%w%w%w%w$") ~= nil and
        fs.stat(tmp).type
      out.rmdir = fs.rmdir(tmp)
      out.unlink = fs.unlink(d .. "/tree/link")
      assert(fs.unlink(d .. "/tree/sub/f2"))
      assert(fs.rmdir(d .. "/tree/sub"))
      assert(fs.rmdir(d .. "/tree"))
      out.empty = 0
      for _, e in ipairs(fs.scandir(d)) do
        if e.name == "tree" then out.empty = out.empty + 1 end
      end
      return out
    end, dir)
    assert.is_true(r.mkdir)
    assert.are.equal(448, r.perm) -- octal 700
    assert.are.equal("directory", r.type)
    assert.is_true(r.symlink)
    assert.are.equal("link", r.link_type)
    assert.are.equal("file", r.followed)
    assert.are.equal("f1", r.readlink)
    assert.are.equal("/", r.realdir:sub(1, 1))
    assert.are.equal(r.realdir .. "/tree/f1", r.realpath)
    assert.are.same({ { name = "f1", type = "file" },
      { name = "link", type = "link" },
      { name = "sub", type = "directory" } }, r.entries)
    assert.are.equal(3, r.readdir)
    assert.is_true(r.rename)
    assert.are.equal("1", r.moved)
    assert.is_nil(r.gone)
    assert.are.equal("directory", r.tmp)
    assert.is_true(r.rmdir)
    assert.is_true(r.unlink)
    assert.are.equal(0, r.empty)
  end)

  it("raises on misuse, naming the argument", function()
    local msgs = run(function(d)
      local fs = require("synchro.aio").fs
      local out = {}
      local function try(fn, ...)
        local ok, err = pcall(fn, ...)
        out[#out + 1] = ok and "no error" or
          tostring(err):gsub("^[^:]*:%d+: ", "")
      end
      try(fs.open, nil)
      try(fs.open, d .. "/x", "rw")
      try(fs.open, d .. "/x", "w", "999")
      try(fs.read, "nope")
      try(fs.read, 0, -1)
      try(fs.read, 0, 1, -5)
      try(fs.write, 1, nil)
      try(fs.stat, {})
      try(fs.mkdtemp, nil)
      try(fs.readfile, 42)
      try(fs.writefile, d .. "/x", {})
      try(fs.close, "x")
      return out
    end, dir)
    assert.are.same({
      "bad argument #1 to 'open' (string expected, got nil)",
      "bad argument #2 to 'open' (invalid mode 'rw')",
      "bad argument #3 to 'open' (octal permission bits expected, got '999')",
      "bad argument #1 to 'read' (file or file descriptor expected, got string)",
      "bad argument #2 to 'read' (size must not be negative)",
      "bad argument #3 to 'read' (offset must not be negative)",
      "bad argument #2 to 'write' (string expected, got nil)",
      "bad argument #1 to 'stat' (string expected, got table)",
      "bad argument #1 to 'mkdtemp' (string expected, got nil)",
      "bad argument #1 to 'readfile' (string expected, got number)",
      "bad argument #2 to 'writefile' (string expected, got table)",
      "bad argument #1 to 'close' (file or file descriptor expected, got string)",
    }, msgs)
  end)

  it("works only on a synchronizer's loop", function()
    local aio = require "synchro.aio"
    local ok, err = pcall(synchro.run, function() return aio.fs.stat("/") end)
    assert.is_false(ok)
    assert.matches("only in async code on a synchronizer's loop", err, 1, true)
  end)

  it("closes files on garbage collection", function()
    local before = fds()
    local during, after = run(function(d)
      local fs = require("synchro.aio").fs
      local held = { files = {} }
      for i = 1, 20 do
        held.files[i] = assert(fs.open(d .. "/gc" .. i, "w"))
      end
      local entries = #fs.scandir("/proc/self/fd")
      assert(#held.files == 20)
      held.files = nil
      collectgarbage()
      collectgarbage()
      for i = 1, 20 do assert(fs.unlink(d .. "/gc" .. i)) end
      return entries, #fs.scandir("/proc/self/fd")
    end, dir)
    assert.are.equal(before + 20, during)
    assert.are.equal(before, after)
  end)

  it("closes a <close> file on Lua 5.4", function()
    if not util.lua54 then return pending("to-be-closed variables need 5.4") end
    local before = fds()
    local fn = load([[
      local d = ...
      local fs = require("synchro.aio").fs
      local fd
      do
        local f <close> = assert(fs.open(d .. "/tbc", "w"))
        fd = f:fileno()
        f:write("x")
      end
      assert(fs.unlink(d .. "/tbc"))
      return fd
    ]])
    assert.is_true(run(fn, dir) > 2)
    assert.are.equal(before, fds())
  end)

  describe("cancellation #subprocess", function()
    -- A FIFO makes a request that stays in flight on the threadpool until
    -- this thread writes to (or opens) the FIFO.
    local fifo

    -- Writes bytes into the FIFO without ever blocking: the shell opens it
    -- for reading and writing (a writer for a reader that waits in open).
    local function feed(bytes)
      os.execute(("sh -c 'exec 3<>%s; printf %%s \"%s\" >&3'")
        :format(fifo, bytes))
    end

    before_each(function()
      fifo = dir .. "/fifo"
      os.execute("mkfifo " .. fifo)
    end)
    after_each(function()
      feed(("x"):rep(16)) -- unblocks reads a failed test left behind
      os.remove(fifo)
    end)

    it("abandons a read in flight at once; the read ends quietly", function()
      local before, base = fds(), in_flight()
      local r = run(function(path)
        local aio = require "synchro.aio"
        local f = assert(aio.fs.open(path, "r+")) -- no wait for a writer
        local t = aio.spawn(function() return f:read(1) end)
        aio.sleep(0.05) -- the read blocks a threadpool thread
        local t0 = aio.now()
        t:cancel()
        local ok, err = pcall(t.join, t)
        local prompt = aio.now() - t0 < 1
        -- the file is closed for Lua now, its fd once the read ends
        local fd = f:fileno()
        f:close()
        return { ok = ok, cancelled = aio.is_cancelled(err), prompt = prompt,
          fd = fd, closed = f:fileno() == nil }
      end, fifo)
      assert.is_false(r.ok)
      assert.is_true(r.cancelled)
      assert.is_true(r.prompt)
      assert.is_true(r.closed)
      assert.are.equal(base + 1, in_flight())
      assert.are.equal(before + 1, fds()) -- the deferred close
      feed("x")
      assert.is_true(util.wait_for(function() return in_flight() == base end))
      assert.are.equal(before, fds())
    end)

    it("closes the file that an abandoned open() opened", function()
      local before, base = fds(), in_flight()
      local ok = run(function(path)
        local aio = require "synchro.aio"
        -- opening a FIFO for reading waits for a writer
        local t = aio.spawn(function() return aio.fs.open(path, "r") end)
        aio.sleep(0.05)
        t:cancel()
        return (pcall(t.join, t))
      end, fifo)
      assert.is_false(ok)
      assert.are.equal(base + 1, in_flight())
      feed("") -- the writer: the abandoned open completes now
      assert.is_true(util.wait_for(function() return in_flight() == base end))
      assert.are.equal(before, fds())
    end)

    it("drops a request that has not started yet (uv_cancel)", function()
      local threads = tonumber(os.getenv("UV_THREADPOOL_SIZE") or "4")
      local before, base = fds(), in_flight()
      local r = run(function(path, n)
        local aio = require "synchro.aio"
        local core = require "synchro.core"
        local f = assert(aio.fs.open(path, "r+"))
        local readers = {}
        for i = 1, n do -- every threadpool thread blocks in a read
          readers[i] = aio.spawn(function() return f:read(1) end)
        end
        fs_spec_readers = { readers = readers, f = f } -- luacheck: ignore
        aio.sleep(0.05)
        local queued = aio.spawn(function() return aio.fs.stat(path) end)
        aio.sleep(0.01)
        local with_queued = core.requests_pending()
        queued:cancel()
        local ok = pcall(queued.join, queued)
        aio.sleep(0.05) -- the cancelled request's callback runs
        local after_cancel = core.requests_pending()
        return { ok = ok, with_queued = with_queued,
          after_cancel = after_cancel }
      end, fifo, threads)
      assert.is_false(r.ok)
      assert.are.equal(base + threads + 1, r.with_queued)
      assert.are.equal(base + threads, r.after_cancel)
      feed(("x"):rep(threads)) -- each read gets one byte
      local got = run(function()
        local state = fs_spec_readers -- luacheck: ignore
        fs_spec_readers = nil -- luacheck: ignore
        local s = ""
        for i = 1, #state.readers do s = s .. state.readers[i]:join() end
        state.f:close()
        return s
      end)
      assert.are.equal(("x"):rep(threads), got)
      assert.are.equal(base, in_flight())
      assert.are.equal(before, fds())
    end)
  end)

  it("leaves nothing behind when the synchronizer closes mid-request " ..
    "#subprocess", function()
      local S2 = synchro.new({ name = "aio-fs-close" })
      local fifo = dir .. "/fifo2"
      os.execute("mkfifo " .. fifo)
      local before = fds()
      local fut = S2:wrap(function(path)
        local aio = require "synchro.aio"
        local f = assert(aio.fs.open(path, "r+"))
        return f:read(1)
      end).future(fifo)
      assert.is_false(fut:wait(0.1))
      -- S2:close() cancels the task; its loop VM closes with the read in
      -- flight, and the loop then waits for the read, which this
      -- background writer ends
      os.execute(("(sleep 0.3; timeout 5 sh -c 'exec 3<>%s; printf x >&3')" ..
        " >/dev/null 2>&1 &"):format(fifo))
      local t0 = util.now()
      S2:close()
      assert.is_true(util.now() - t0 >= 0.2)
      assert.has_error(function() fut:result() end)
      os.remove(fifo)
      assert.are.equal(before, fds())
    end)
end)
