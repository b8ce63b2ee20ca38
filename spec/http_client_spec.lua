-- synchro.aio.http and synchro.http against real servers on 127.0.0.1:
-- python3's http.server (spec/fixtures/http_server.py: a threading server
-- with a deep accept queue; the stock one's queue of 5 drops SYNs under
-- 100 concurrent connects) and an aio.tcp server written here for status
-- codes, redirects, chunked bodies, gzip and broken servers.
local synchro = require "synchro"
local util = require "spec.helpers.util"

local function has(s, part) return type(s) == "string" and
  s:find(part, 1, true) ~= nil end

-- pairs honours __pairs from Lua 5.2 on (not on 5.1 and LuaJIT)
local honours_pairs = false
for _ in pairs(setmetatable({}, { __pairs = function()
  honours_pairs = true
  return next, {}, nil
end })) do end

describe("synchro.aio.http", function()
  local S, dir, port, pidfile, srv
  setup(function()
    S = synchro.new({ name = "http-spec" })
    dir = util.tmpname()
    assert(os.execute("mkdir -p " .. dir))
    util.write(dir .. "/small.txt", "hello http\n")
    local big = {}
    for i = 1, 16384 do big[i] = ("%063d\n"):format(i) end
    util.write(dir .. "/big.bin", table.concat(big)) -- 1 MiB
    util.write(dir .. "/data.json", '{"a":[1,2,3],"n":null,"e":[]}')
    port = 20000 + tonumber(util.pid()) % 20000
    pidfile = dir .. "/pid"
    -- env -u LD_PRELOAD: under tools/sanitize.sh, ASan is preloaded
    os.execute(("cd %s && (env -u LD_PRELOAD python3 " ..
      "%s/spec/fixtures/http_server.py %d " ..
      ">/dev/null 2>&1 & echo $! >%s)"):format(dir, os.getenv("PWD") or ".",
      port, pidfile))
    assert(util.wait_for(function()
      local r = os.execute(("env -u LD_PRELOAD curl -s -o /dev/null " ..
        "http://127.0.0.1:%d/small.txt"):format(port))
      return r == true or r == 0 -- 5.1 gives the status
    end, 10), "python http.server did not start")
    -- the aio.tcp server: one behaviour per path
    srv = S:wrap(function()
      local aio = require "synchro.aio"
      local server = assert(aio.tcp.listen("127.0.0.1", 0, function(s)
        while true do
          local line = s:read_line()
          if not line then return end
          local path = line:match("^%u+ (%S+)")
          local len, chunked, expect = 0, false, false
          repeat
            local h = s:read_line()
            if not h then return end
            len = tonumber(h:match("^[Cc]ontent%-[Ll]ength: (%d+)")) or len
            chunked = chunked or h:lower():find("^transfer%-encoding: chunked")
            expect = expect or h:lower():find("^expect: 100")
          until h == ""
          if expect then s:write("HTTP/1.1 100 Continue\r\n\r\n") end
          local body = len > 0 and s:read_exactly(len) or ""
          if chunked then
            local parts = {}
            while true do
              local size = tonumber(s:read_line(), 16)
              if not size then return end
              if size == 0 then s:read_line() break end
              parts[#parts + 1] = s:read_exactly(size)
              s:read_line()
            end
            body = table.concat(parts)
          end
          local code = path:match("^/status/(%d+)")
          if code then
            s:write(("HTTP/1.1 %s X\r\nContent-Length: 0\r\n\r\n"):format(code))
          elseif path:match("^/redirect/%d+") then
            local k = tonumber(path:match("%d+"))
            local to = k > 1 and ("/redirect/" .. (k - 1)) or "/echo"
            s:write("HTTP/1.1 302 Found\r\nLocation: " .. to ..
              "\r\nContent-Length: 0\r\n\r\n")
          elseif path == "/chunked" then
            s:write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" ..
              "Set-Cookie: a=1\r\nset-cookie: b=2\r\n\r\n" ..
              "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
          elseif path == "/odd-headers" then
            s:write("HTTP/1.1 201 Created Here \r\nX-A:no-space\r\n" ..
              "X-B: \t padded \t\r\nX-Empty:\r\n" ..
              " Folded: continuation\r\nBad Name: x\r\nX-A: second\r\n" ..
              "Content-Length: 2\r\n\r\nok")
          elseif path == "/close-mid-body" then
            s:write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            s:close()
            return
          elseif path == "/stall" then
            s:write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nslow")
            aio.sleep(30)
            return
          else -- /echo and /n/<k>: method, path and body back
            local out = line:match("^(%u+)") .. " " .. path .. " " .. body
            s:write(("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s")
              :format(#out, out))
          end
        end
      end, { backlog = 1024 }))
      _G.http_spec_server = server
      return server:port()
    end)()
  end)
  teardown(function()
    os.execute("kill $(cat " .. pidfile .. ") 2>/dev/null")
    S:close()
    os.execute("rm -rf " .. dir)
  end)

  local function url(path) return ("http://127.0.0.1:%d%s"):format(port, path) end
  local function surl(path) return ("http://127.0.0.1:%d%s"):format(srv, path) end

  it("GETs a file from python's http.server", function()
    local r = S:wrap(function(u)
      local http = require "synchro.aio.http"
      return assert(http.get(u))
    end)(url("/small.txt"))
    assert.are.equal(200, r.status)
    assert.is_true(r.ok)
    assert.are.equal("hello http\n", r.body)
    assert.are.equal("11", r.headers["Content-Length"])
    assert.are.equal("11", r.headers["content-length"])
    assert.are.equal("11", r:header("CONTENT-LENGTH"))
    assert.are.equal(url("/small.txt"), r.url)
  end)

  it("parses headers as the server wrote them, in either VM", function()
    local function check(r, where)
      assert.are.equal(201, r.status, where)
      assert.are.equal("Created Here", r.reason, where)
      assert.are.equal("ok", r.body, where)
      assert.are.equal("no-space, second", r.headers["X-A"], where)
      assert.are.equal("padded", r.headers["x-b"], where)
      assert.are.equal("", r.headers["X-Empty"], where)
      assert.is_nil(r.headers["folded"], where)
      assert.is_nil(r.headers["bad name"], where)
      assert.are.same({ "no-space", "second" }, r:header_all("x-a"), where)
      local names = {}
      for i, h in ipairs(r.header_list) do names[i] = h[1] end
      assert.are.same({ "X-A", "X-B", "X-Empty", "X-A", "Content-Length" },
        names, where)
    end
    local loop_side, fields = S:wrap(function(u)
      local http = require "synchro.aio.http"
      local r = assert(http.get(u))
      local ok, err = pcall(function()
        assert(r.reason == "Created Here" and r.headers["x-b"] == "padded")
      end)
      -- pairs shows the parsed fields of a response not yet parsed
      local q, keys = assert(http.get(u)), {}
      for k in pairs(q) do keys[#keys + 1] = k end
      table.sort(keys)
      return ok or err, keys, r
    end)(surl("/odd-headers"))
    assert.is_true(loop_side)
    for _, k in ipairs({ "body", "header_list", "headers", "reason",
      "status" }) do
      local parsed_on_use = k == "header_list" or k == "headers" or
        k == "reason"
      assert.are.equal(honours_pairs or not parsed_on_use,
        has(table.concat(fields, " "), k), k)
    end
    -- a response that crossed unparsed, and one parsed before crossing
    check(S:wrap(function(u)
      return assert(require("synchro.aio.http").get(u))
    end)(surl("/odd-headers")), "crossed unparsed")
    check(S:wrap(function(u)
      local r = assert(require("synchro.aio.http").get(u))
      local _ = r.headers
      return r
    end)(surl("/odd-headers")), "crossed parsed")
  end)

  it("gives a 1 MiB body whole, and decodes JSON with cjson", function()
    local r, j, read_first, in_loop = S:wrap(function(u, v)
      local http = require "synchro.aio.http"
      local b = assert(http.get(u))
      local d = assert(http.get(v))
      -- a large body is read in the loop too, or crosses after that
      local c = assert(http.get(u))
      local seen = { len = #c.body, head = c.body:sub(1, 64) }
      local e, keys = assert(http.get(u)), {}
      for k, x in pairs(e) do keys[k] = type(x) end
      seen.pairs_body = keys.body
      return b, d, c, seen
    end)(url("/big.bin"), url("/data.json"))
    local want = util.read(dir .. "/big.bin")
    assert.are.equal(1048576, #r.body)
    assert.are.equal(want, r.body)
    assert.are.equal(want, read_first.body)
    assert.are.same({ len = 1048576, head = want:sub(1, 64),
      pairs_body = honours_pairs and "string" or nil }, in_loop)
    local v = j:json()
    assert.are.same({ 1, 2, 3 }, v.a)
    assert.are.equal(require("cjson").null, v.n)
    assert.are.same({}, v.e)
    local bad = setmetatable({ body = "{nope" }, getmetatable(j))
    local none, msg, code = bad:json()
    assert.is_nil(none)
    assert.are.equal("EBADJSON", code)
    assert.is_true(has(msg, "EBADJSON: "))
  end)

  it("gives status codes, follows redirects, keeps repeated headers", function()
    local res = S:wrap(function(u404, ured, ured11, uch, upost)
      local http = require "synchro.aio.http"
      local out = {}
      out.s404 = assert(http.get(u404)).status
      local r = assert(http.get(ured))
      out.red = { r.status, r.body, r.url }
      out.nofollow = assert(http.get(ured, { follow = false })).status
      out.toomany = { http.get(ured11) }
      local c = assert(http.get(uch))
      out.chunked = { c.body, c:header_all("set-cookie"), c.headers["Set-Cookie"] }
      local p = assert(http.post(upost, "payload"))
      out.post = p.body
      local put = assert(http.request({ url = upost, method = "put",
        body = "x" }))
      out.put = put.body
      local parts = { "a", "b", "c" }
      local g = assert(http.post(upost, function()
        require("synchro.aio").sleep(0.01)
        return table.remove(parts, 1)
      end))
      out.gen = g.body
      return out
    end)(surl("/status/404"), surl("/redirect/3"), surl("/redirect/11"),
      surl("/chunked"), surl("/echo"))
    assert.are.equal(404, res.s404)
    assert.are.same({ 200, "GET /echo ", surl("/echo") }, res.red)
    assert.are.equal(302, res.nofollow)
    assert.are.equal("CURLE_TOO_MANY_REDIRECTS", res.toomany[3])
    assert.are.same({ "hello world", { "a=1", "b=2" }, "a=1, b=2" },
      res.chunked)
    assert.are.equal("POST /echo payload", res.post)
    assert.are.equal("PUT /echo x", res.put)
    assert.are.equal("POST /echo abc", res.gen)
  end)

  it("returns nil, msg, code for refused, cut and stalled transfers", function()
    local res = S:wrap(function(ucut, ustall)
      local http = require "synchro.aio.http"
      local aio = require "synchro.aio"
      local out = {}
      out.refused = { http.get("http://127.0.0.1:1/") }
      out.cut = { http.get(ucut) }
      local t0 = aio.now()
      out.stall = { http.get(ustall, { timeout = 0.3 }) }
      out.stall_took = aio.now() - t0
      t0 = aio.now()
      local task = aio.spawn(http.get, ustall)
      aio.sleep(0.1)
      task:cancel()
      out.cancelled = aio.is_cancelled(select(2, pcall(task.join, task)))
      out.cancel_took = aio.now() - t0
      out.transfers = http.transfers()
      return out
    end)(surl("/close-mid-body"), surl("/stall"))
    assert.are.equal("ECONNREFUSED", res.refused[3])
    assert.is_true(has(res.refused[2], "ECONNREFUSED: "))
    assert.are.equal("CURLE_PARTIAL_FILE", res.cut[3])
    assert.are.equal("ETIMEDOUT", res.stall[3])
    assert.is_true(res.stall_took < 5)
    assert.is_true(res.cancelled)
    assert.is_true(res.cancel_took < 5)
    assert.are.equal(0, res.transfers)
  end)

  it("runs 1,000 concurrent requests and checks every body", function()
    local bad = S:wrap(function(base)
      local http = require "synchro.aio.http"
      local aio = require "synchro.aio"
      local jobs = {}
      for i = 1, 1000 do
        jobs[i] = function()
          local r, msg = http.get(base .. i)
          if not r then return msg end
          if r.body ~= "GET /n/" .. i .. " " then return r.body end
          return false
        end
      end
      local res = { aio.gather((table.unpack or unpack)(jobs)) }
      local wrong = {}
      for i = 1, 1000 do if res[i] then wrong[#wrong + 1] = res[i] end end
      return wrong
    end)(surl("/n/"))
    assert.are.same({}, bad)
  end)

  it("streams a body with back pressure", function()
    local res = S:wrap(function(u)
      local http = require "synchro.aio.http"
      local r = assert(http.request({ url = u, stream = true }))
      local n, pieces = 0, 0
      -- r:read() in a loop: PUC 5.1 cannot yield in a for iterator
      -- (r:chunks() works on 5.2+ and LuaJIT)
      while true do
        local chunk = assert(r:read() or "")
        if chunk == "" then break end
        n, pieces = n + #chunk, pieces + 1
      end
      return { status = r.status, body = r.body, n = n, pieces = pieces }
    end)(url("/big.bin"))
    assert.are.equal(200, res.status)
    assert.is_nil(res.body)
    assert.are.equal(1048576, res.n)
    assert.is_true(res.pieces >= 1)
  end)

  it("bounds a client's requests per host", function()
    local res = S:wrap(function(base)
      local http = require "synchro.aio.http"
      local aio = require "synchro.aio"
      local c = http.client({ max_per_host = 2, timeout = 10 })
      local jobs = {}
      for i = 1, 20 do
        jobs[i] = function() return assert(c:get(base .. i)).body end
      end
      return { aio.gather((table.unpack or unpack)(jobs)) }
    end)(surl("/n/"))
    for i = 1, 20 do assert.are.equal("GET /n/" .. i .. " ", res[i]) end
  end)

  it("raises on misuse, naming the argument", function()
    local errs = S:wrap(function()
      local http = require "synchro.aio.http"
      local out = {}
      local cases = {
        function() return http.get("not a url") end,
        function() return http.get("ftp://127.0.0.1/") end,
        function() return http.request({ url = "http://x/", timout = 1 }) end,
        function() return http.post("http://127.0.0.1:1/", {}) end,
        function() return http.get(42) end,
        function() return http.request("http://x/") end,
        function() return http.get("http://x/", { timeout = 0 / 0 }) end,
        function() return http.client({ max_per_host = 0 }) end,
      }
      for i, f in ipairs(cases) do
        local ok, err = pcall(f)
        out[i] = ok and "no error" or tostring(err)
      end
      return out
    end)()
    assert.is_true(has(errs[1], "bad argument #1 to 'get' (url: malformed"))
    assert.is_true(has(errs[2], "is not http or https"))
    assert.is_true(has(errs[3], "unknown option 'timout'"))
    assert.is_true(has(errs[4], "bad argument #2 to 'post' (body: string"))
    assert.is_true(has(errs[5], "url: string expected, got number"))
    assert.is_true(has(errs[6], "bad argument #1 to 'request' (table"))
    assert.is_true(has(errs[7], "timeout is NaN"))
    assert.is_true(has(errs[8], "max_per_host"))
  end)

  it("synchro.http: blocking calls, futures, responses by value", function()
    local http = require "synchro.http"
    local r = http.get(url("/small.txt"))
    assert.are.equal(200, r.status)
    assert.are.equal("hello http\n", r.body)
    assert.are.equal("11", r.headers["Content-Length"])
    local futs = {}
    for i = 1, 20 do futs[i] = http.get.future(surl("/n/" .. i)) end
    for i = 1, 20 do
      assert.are.equal("GET /n/" .. i .. " ", futs[i]:result(30).body)
    end
    local none, msg, code = http.get("http://127.0.0.1:1/")
    assert.is_nil(none)
    assert.are.equal("ECONNREFUSED", code)
    assert.is_true(has(msg, "ECONNREFUSED"))
  end)
end)
