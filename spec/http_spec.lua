-- The HTTP client of examples/http_get.lua against Python's http.server
-- and against servers written with synchro.aio.tcp; and the demo.
local synchro = require "synchro"
local util = require "spec.helpers.util"

local top = os.getenv("PWD") or "."
local examples = top .. "/examples/?.lua;"

describe("examples/http_get.lua", function()
  local S, saved_path
  setup(function()
    saved_path = package.path
    package.path = examples .. package.path -- the loop VM copies it
    S = synchro.new({ name = "http-spec" })
  end)
  teardown(function()
    S:close()
    package.path = saved_path
  end)

  local function run(fn, ...) return S:wrap(fn)(...) end

  -- A free port: bind port 0 on the loop, read the port, let it go.
  local free_port = function()
    return run(function()
      local server = assert(require("synchro.aio").tcp.listen("127.0.0.1", 0))
      local port = server:port()
      server:close()
      return port
    end)
  end

  local wait_listening = function(port)
    return run(function(p)
      local aio = require "synchro.aio"
      for _ = 1, 500 do
        local c = aio.tcp.connect("127.0.0.1", p)
        if c then
          c:close()
          return true
        end
        aio.sleep(0.02)
      end
      return false
    end, port)
  end

  describe("against python3 -m http.server #subprocess", function()
    local dir, pid, port
    local blob
    setup(function()
      dir = util.tmpname()
      os.execute("mkdir -p " .. dir .. "/site")
      util.write(dir .. "/site/hello.txt", "hello, world\n")
      local bytes = {}
      for i = 1, 256 * 1024 do bytes[i] = string.char((i * 7) % 256) end
      blob = table.concat(bytes)
      util.write(dir .. "/site/blob.bin", blob)
      port = free_port()
      os.execute(("python3 -m http.server %d --bind 127.0.0.1 " ..
        "--directory %s/site >%s/log 2>&1 & echo $! >%s/pid")
        :format(port, dir, dir, dir))
      pid = (util.read(dir .. "/pid") or ""):match("%d+")
      assert(wait_listening(port), "http.server did not start: " ..
        tostring(util.read(dir .. "/log")))
    end)
    teardown(function()
      if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
      if dir then os.execute("rm -rf " .. dir) end
    end)

    it("gets a small file, a binary one, a listing and a 404", function()
      local get = require("http_get").wrap(S)
      local base = ("http://127.0.0.1:%d"):format(port)
      local status, headers, body = get(base .. "/hello.txt")
      assert.are.equal(200, status)
      assert.are.equal("13", headers["content-length"])
      assert.are.equal("hello, world\n", body)
      local bstatus, _, bbody = get(base .. "/blob.bin")
      assert.are.equal(200, bstatus)
      assert.are.equal(#blob, #bbody)
      assert.is_true(blob == bbody)
      local lstatus, _, listing = get(base .. "/")
      assert.are.equal(200, lstatus)
      assert.is_truthy(listing:find("hello.txt", 1, true))
      assert.are.equal(404, (get(base .. "/missing")))
    end)

    it("runs as a script: lua examples/http_get.lua URL", function()
      local p = io.popen(("%s examples/http_get.lua " ..
        "http://127.0.0.1:%d/hello.txt 2>&1"):format(util.interpreter(), port))
      local out = p:read("*a")
      p:close()
      assert.is_truthy(out:find("^200\n"), out)
      assert.is_truthy(out:find("content-length: 13\n", 1, true), out)
      assert.is_truthy(out:find("\n\nhello, world\n$"), out)
    end)

    it("gets 10 files concurrently through futures", function()
      local get = require("http_get").wrap(S)
      local futs = {}
      for i = 1, 10 do
        futs[i] = get.future(("http://127.0.0.1:%d/hello.txt?%d")
          :format(port, i))
      end
      for i = 1, 10 do
        local status, _, body = futs[i]:result(30)
        assert.are.equal(200, status)
        assert.are.equal("hello, world\n", body)
      end
    end)
  end)

  describe("against synchro.aio.tcp servers", function()
    -- Serves a few canned responses, keyed by the request path; writes
    -- them byte by byte when the path ends in "/slow".
    local start = function()
      return run(function()
        local aio = require "synchro.aio"
        local chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" ..
          "X-Dup: a\r\nX-Dup: b\r\n\r\n" ..
          "5;ext=1\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n0\r\n" ..
          "X-Trailer: yes\r\n\r\n"
        local responses = {
          ["/length"] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n" ..
            "Content-Type: text/plain\r\n\r\nabcde",
          ["/chunked"] = chunked,
          ["/chunked/slow"] = chunked,
          ["/close"] = "HTTP/1.0 200 OK\r\n\r\nuntil the end",
          ["/empty"] = "HTTP/1.1 204 No Content\r\n\r\n",
          ["/garbage"] = "SPDY/9 what\r\n\r\n",
          ["/truncated"] = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        }
        local server = assert(aio.tcp.listen("127.0.0.1", 0, function(s)
          local request = s:read_line()
          repeat local line = s:read_line() until line == "" or line == nil
          local method, path = request:match("^(%u+) (%S+)")
          if path == "/silent" then aio.sleep(30) end
          local response = responses[path] or
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
          if method == "HEAD" then
            response = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
          end
          if path:find("/slow$") then
            for i = 1, #response do
              s:write(response:sub(i, i))
              aio.sleep(0)
            end
          else
            s:write(response)
          end
        end))
        -- it serves until the synchronizer closes
        return server:port()
      end)
    end
    local port
    setup(function() port = start() end)

    local function fetch(path, method, opts)
      return run(function(url, m, o)
        return require("http_get").request(m, url, o)
      end, ("http://127.0.0.1:%d%s"):format(port, path), method or "GET",
        opts)
    end

    it("reads Content-Length, chunked and until-close bodies", function()
      local s1, h1, b1 = fetch("/length")
      assert.are.same({ 200, "5", "text/plain", "abcde" },
        { s1, h1["content-length"], h1["content-type"], b1 })
      local s2, h2, b2 = fetch("/chunked")
      assert.are.same({ 200, "hello, world", "yes", "a, b" },
        { s2, b2, h2["x-trailer"], h2["x-dup"] })
      local s3, _, b3 = fetch("/chunked/slow")
      assert.are.same({ 200, "hello, world" }, { s3, b3 })
      local s4, _, b4 = fetch("/close")
      assert.are.same({ 200, "until the end" }, { s4, b4 })
    end)

    it("knows responses without a body", function()
      local estatus, _, ebody = fetch("/empty")
      assert.are.same({ 204, "" }, { estatus, ebody })
      local status, headers, body = fetch("/length", "HEAD")
      assert.are.same({ 200, "100", "" },
        { status, headers["content-length"], body })
      assert.are.equal(404, (fetch("/nothing")))
    end)

    it("returns error triples for bad responses, refusals and timeouts",
       function()
      assert.are.same({ nil, "EPROTO: bad status line: SPDY/9 what",
        "EPROTO" }, { fetch("/garbage") })
      assert.are.same({ nil, "EOF: connection closed after 3 of 10 bytes",
        "EOF" }, { fetch("/truncated") })
      local closed = free_port()
      local r = { run(function(url)
        return require("http_get").get(url)
      end, ("http://127.0.0.1:%d/"):format(closed)) }
      assert.are.same({ nil, "ECONNREFUSED: connection refused",
        "ECONNREFUSED" }, r)
      assert.are.same({ nil, "ETIMEDOUT: timed out after 0.2 s",
        "ETIMEDOUT" }, { fetch("/silent", "GET", { timeout = 0.2 }) })
      assert.are.same({ nil, "EINVAL: only http:// URLs are supported",
        "EINVAL" }, { run(function()
          return require("http_get").get("https://example.invalid/")
        end) })
    end)
  end)

  it("examples/http_demo.lua fetches 20 URLs concurrently #subprocess",
     function()
    local h = util.spawn_lua(("package.path = %q\npackage.cpath = %q\n")
      :format(examples .. package.path, package.cpath) ..
      util.read("examples/http_demo.lua"))
    local code = util.wait_exit(h, 60)
    local out, err = util.read(h.out) or "", util.read(h.err) or ""
    util.cleanup(h)
    assert.are.equal(0, code, err)
    local ok = select(2, out:gsub("\n127%.0%.0%.1:%d+/%a+/%d+ +200 ", ""))
    assert.are.equal(20, ok, out)
    assert.is_truthy(out:find("fetched 20 URLs %(%d+ bytes%) concurrently " ..
      "in [%d.]+ s"), out)
    assert.is_truthy(out:find("blocking get:\t200\titem 42", 1, true), out)
    assert.is_truthy(out:find("missing page:\t404", 1, true), out)
  end)
end)
