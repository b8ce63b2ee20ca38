-- synchro.aio.http: bodies. gzip (Accept-Encoding, curl decoding), the
-- streamed form's back pressure (a slow reader: curl is paused, memory
-- stays bounded, the server is held back, and reading goes on), request
-- bodies from a file and from a generator, servers that stall or close in
-- the middle of a body, Ctrl-C in a blocked caller, and HTTP/2
-- multiplexing against nghttpd (when installed). The servers are an
-- aio.tcp server written here and nghttpd, all on 127.0.0.1.
local synchro = require "synchro"
local util = require "spec.helpers.util"
local https = require "spec.helpers.https"

local function has(s, part) return type(s) == "string" and
  s:find(part, 1, true) ~= nil end

local FLOOD = 64 * 1024 * 1024 -- more than the kernel's socket buffers

describe("synchro.aio.http bodies", function()
  local S, dir, port, original
  setup(function()
    S = synchro.new({ name = "http-body-spec" })
    dir = util.tmpname()
    os.execute("mkdir -p " .. dir)
    local lines = {}
    for i = 1, 20000 do lines[i] = ("line %05d of a compressible text\n")
      :format(i) end
    original = table.concat(lines)
    util.write(dir .. "/text", original)
    os.execute(("gzip -c %s/text >%s/text.gz"):format(dir, dir))
    local gz = util.read(dir .. "/text.gz")
    port = S:wrap(function(gzipped)
      local aio = require "synchro.aio"
      local piece = ("x"):rep(65536)
      _G.body_spec = { written = 0, hold_closed = false }
      local state = _G.body_spec
      local server = assert(aio.tcp.listen("127.0.0.1", 0, function(s)
        while true do
          local line = s:read_line()
          if not line then return end
          local path = line:match("^%u+ (%S+)")
          local len, chunked, ae = 0, false, nil
          repeat
            local h = s:read_line()
            if not h then return end
            local lower = h:lower()
            len = tonumber(lower:match("^content%-length: (%d+)")) or len
            chunked = chunked or lower:find("^transfer%-encoding: chunked")
            ae = ae or h:match("^[Aa]ccept%-[Ee]ncoding: (.*)$")
            if lower:find("^expect: 100") then
              s:write("HTTP/1.1 100 Continue\r\n\r\n")
            end
          until h == ""
          local body = len > 0 and s:read_exactly(len) or ""
          if chunked then
            local parts = {}
            while true do
              local size = tonumber(s:read_line() or "", 16)
              if not size then return end
              if size == 0 then s:read_line() break end
              parts[#parts + 1] = s:read_exactly(size)
              s:read_line()
            end
            body = table.concat(parts)
          end
          if path == "/gzip" then
            local enc = ae and ae:find("gzip", 1, true)
            local out = enc and gzipped or "plain:" .. tostring(ae)
            s:write(("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s")
              :format(#out, enc and "Content-Encoding: gzip\r\n" or "", out))
          elseif path == "/flood" then
            state.written = 0
            s:write(("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n")
              :format(65536 * 1024))
            for _ = 1, 1024 do
              if not s:write(piece) then return end
              state.written = state.written + #piece
            end
          elseif path == "/close-mid-body" then
            s:write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            s:close()
            return
          elseif path == "/hold" then -- part of a body, then waits for EOF
            state.hold_closed = false
            s:write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nslow")
            while s:read() do end
            state.hold_closed = true
            return
          else -- /echo: the body back
            s:write(("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s")
              :format(#body, body))
          end
        end
      end, { backlog = 128 }))
      _G.body_spec_server = server
      return server:port()
    end)(gz)
  end)
  teardown(function()
    S:close()
    os.execute("rm -rf " .. dir)
  end)

  local function url(path)
    return ("http://127.0.0.1:%d%s"):format(port, path)
  end
  local server_state = function() return S:wrap(function()
    local st = _G.body_spec
    return { written = st.written, hold_closed = st.hold_closed }
  end)() end

  it("asks for gzip and decodes it; decompress = false leaves it alone",
    function()
      local res = S:wrap(function(u)
        local http = require "synchro.aio.http"
        local a = assert(http.get(u))
        local b = assert(http.get(u, { decompress = false }))
        local c = assert(http.get(u, { decompress = false,
          headers = { ["Accept-Encoding"] = "gzip" } }))
        return { a.body, a.headers["content-encoding"], b.body,
          c.headers["content-encoding"], c.body }
      end)(url("/gzip"))
      assert.are.equal(#original, #res[1])
      assert.are.equal(original, res[1])
      assert.are.equal("gzip", res[2])
      assert.are.equal("plain:nil", res[3]) -- no Accept-Encoding sent
      assert.are.equal("gzip", res[4])
      assert.are.equal(util.read(dir .. "/text.gz"), res[5]) -- not decoded
    end)

  it("pauses curl for a slow reader: memory bounded, the server held " ..
    "back, then the whole body", function()
      local res = S:wrap(function(u)
        local http = require "synchro.aio.http"
        local aio = require "synchro.aio"
        local st = _G.body_spec
        local r = assert(http.request({ url = u, stream = true }))
        local n = #assert(r:read())
        -- the reader dawdles: curl fills up and pauses, the socket
        -- buffers fill, the server's writes block (waited for until its
        -- count stands still, however loaded the machine is)
        local last, still = -1, 0
        for _ = 1, 100 do
          aio.sleep(0.05)
          if st.written == last then still = still + 1 else still = 0 end
          last = st.written
          if still >= 4 then break end
        end
        local out = { buffered = r._t:buffered(), written = st.written }
        aio.sleep(0.3)
        out.written_later = st.written
        out.buffered_later = r._t:buffered()
        while true do
          local chunk, msg = r:read()
          if not chunk then
            out.err = msg
            break
          end
          n = n + #chunk
        end
        out.n, out.final = n, st.written
        return out
      end)(url("/flood"))
      assert.is_nil(res.err)
      assert.are.equal(FLOOD, res.n)
      assert.are.equal(FLOOD, res.final)
      -- curl holds at most its high water mark (256 KiB) and one write
      assert.is_true(res.buffered <= 512 * 1024, "buffered " .. res.buffered)
      assert.is_true(res.buffered_later <= 512 * 1024)
      -- paused: the server got no further than the socket buffers let it
      assert.is_true(res.written < FLOOD / 2, "written " .. res.written)
      assert.are.equal(res.written, res.written_later)
    end)

  it("sends a request body from an aio.fs file and from a generator",
    function()
      local big = ("0123456789abcdef"):rep(3 * 65536) -- 3 MiB
      util.write(dir .. "/upload", big)
      local res = S:wrap(function(u, path)
        local http = require "synchro.aio.http"
        local aio = require "synchro.aio"
        local out = {}
        local f = assert(aio.fs.open(path, "r"))
        out.file = assert(http.post(u, f)).body
        f:close()
        local i = 0
        out.gen = assert(http.post(u, function()
          i = i + 1
          if i > 100 then return nil end
          if i % 10 == 0 then aio.sleep(0.001) end
          return ("%03d,"):format(i)
        end)).body
        -- a generator that fails: its error is raised, nothing is left
        out.raised = select(2, pcall(http.post, u, function()
          error("source broke", 0)
        end))
        out.bad = select(2, pcall(http.post, u, function() return 42 end))
        out.transfers = http.transfers()
        return out
      end)(url("/echo"), dir .. "/upload")
      assert.are.equal(#big, #res.file)
      assert.are.equal(big, res.file)
      local want = {}
      for i = 1, 100 do want[i] = ("%03d,"):format(i) end
      assert.are.equal(table.concat(want), res.gen)
      assert.are.equal("source broke", res.raised)
      assert.is_true(has(res.bad, "body source returned a number"), res.bad)
      assert.are.equal(0, res.transfers)
    end)

  it("a stream whose server closes or stalls mid-body ends with an error " ..
    "(regression: a body cut before request() returned gave no stream)",
    function()
      local res = S:wrap(function(ucut, uhold)
        local http = require "synchro.aio.http"
        local out = {}
        local r = assert(http.request({ url = ucut, stream = true }))
        out.cut = { r:read_all() }
        r = assert(http.request({ url = uhold, stream = true,
          timeout = 0.5 }))
        out.first = r:read()
        out.stall = { r:read() }
        out.transfers = http.transfers()
        return out
      end)(url("/close-mid-body"), url("/hold"))
      assert.is_nil(res.cut[1])
      assert.are.equal("CURLE_PARTIAL_FILE", res.cut[3])
      assert.are.equal("slow", res.first)
      assert.is_nil(res.stall[1])
      assert.are.equal("ETIMEDOUT", res.stall[3])
      assert.are.equal(0, res.transfers)
      assert.is_true(util.wait_for(function()
        return server_state().hold_closed
      end, 10), "the stalled connection was not closed")
    end)

  it("Ctrl-C in a blocked synchro.http call removes the transfer " ..
    "#subprocess", function()
      local r = util.ctrl_c(([[
        local http = require "synchro.http"
        local f = io.open(STARTED, "w") f:close()
        http.get(%q)
        print("not reached")
      ]]):format(url("/hold")))
      assert.is_true(r.started, "child did not start: " .. r.err)
      assert.is_not_nil(r.code, "the child hung" .. (r.stacks or ""))
      assert.are_not.equal(0, r.code)
      assert.matches("interrupted!", r.err, 1, true)
      assert.are.equal("", r.out)
      assert.is_true(util.wait_for(function()
        return server_state().hold_closed
      end, 10), "the connection was not closed")
    end)
end)

describe("synchro.aio.http over HTTP/2", function()
  local S, tls, pid, port, root
  setup(function()
    S = synchro.new({ name = "http2-spec" })
    if os.execute("command -v nghttpd >/dev/null 2>&1") ~= true and
      os.execute("command -v nghttpd >/dev/null 2>&1") ~= 0 then
      return
    end
    root = util.tmpname()
    os.execute("mkdir -p " .. root)
    for i = 1, 20 do util.write(("%s/%d.txt"):format(root, i), "h2 " .. i) end
    tls = assert(https.start(root)) -- for its certificates
    tls.web_pid = tls.pid
    -- a free port: the kernel's pick, released (nghttpd takes a number)
    local p = io.popen("python3 -c 'import socket; s = socket.socket(); " ..
      "s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'")
    port = tonumber(p:read("*l"))
    p:close()
    local log, pidfile = root .. "/nghttpd.log", root .. "/nghttpd.pid"
    os.execute(("(env -u LD_PRELOAD nghttpd -v -a 127.0.0.1 -d %s %d " ..
      "%s/server.key %s/server.pem >%s 2>&1 & echo $! >%s)"):format(root,
      port, tls.dir, tls.dir, log, pidfile))
    util.wait_for(function() return util.read(pidfile) end, 5)
    pid = (util.read(pidfile) or ""):match("%d+")
    assert(util.wait_for(function()
      local r = os.execute(("env -u LD_PRELOAD curl -s -o /dev/null " ..
        "--cacert %s https://127.0.0.1:%d/1.txt"):format(tls.cafile, port))
      return r == true or r == 0
    end, 10), "nghttpd did not start")
  end)
  teardown(function()
    if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
    if tls then tls:stop() end
    if root then os.execute("rm -rf " .. root) end
    S:close()
  end)

  it("multiplexes concurrent requests on one connection", function()
    if not pid then
      pending("nghttpd is not installed (Debian: nghttp2-server)")
      return
    end
    local res = S:wrap(function(base, cafile)
      local http = require "synchro.aio.http"
      local aio = require "synchro.aio"
      local jobs = {}
      for i = 1, 20 do
        jobs[i] = function()
          local r = assert(http.get(base .. i .. ".txt", { cafile = cafile }))
          return { r.body, r.http_version }
        end
      end
      return { aio.gather((table.unpack or unpack)(jobs)) }
    end)(("https://127.0.0.1:%d/"):format(port), tls.cafile)
    for i = 1, 20 do
      assert.are.same({ "h2 " .. i, "2" }, res[i])
    end
    -- nghttpd -v logs each connection's frames under its session id
    local ids = {}
    for id in (util.read(root .. "/nghttpd.log") or ""):gmatch("%[id=(%d+)%]")
    do ids[id] = true end
    local n = 0
    for _ in pairs(ids) do n = n + 1 end
    -- the readiness probe (curl) made one connection; the 20 share one
    assert.are.equal(2, n)
  end)
end)
