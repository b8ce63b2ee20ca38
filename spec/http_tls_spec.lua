-- synchro.aio.http over TLS: python3's http.server wrapped with ssl, with
-- a CA and a server certificate for 127.0.0.1 (only) that this
-- spec makes with the openssl command in a temp dir. Verification is on
-- by default: the right CA passes; a wrong CA and a wrong host name fail
-- with an error that says the certificate did not verify.
local synchro = require "synchro"
local util = require "spec.helpers.util"

local function has(s, part) return type(s) == "string" and
  s:find(part, 1, true) ~= nil end

local function sh(cmd)
  local r = os.execute("(unset LD_PRELOAD; " .. cmd .. ") >/dev/null 2>&1")
  assert(r == true or r == 0, cmd)
end

describe("synchro.aio.http over TLS", function()
  local S, dir, port, pidfile
  setup(function()
    S = synchro.new({ name = "https-spec" })
    dir = util.tmpname()
    sh("mkdir -p " .. dir)
    local function ca(name)
      sh(("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -days 2 " ..
        "-subj /CN=%s -keyout %s.key -out %s.pem"):format(dir, name, name,
        name))
    end
    ca("ca")
    ca("otherca")
    util.write(dir .. "/ext.cnf",
      "subjectAltName=IP:127.0.0.1\n") -- not "localhost"
    sh(("cd %s && openssl req -newkey rsa:2048 -nodes -subj /CN=localhost " ..
      "-keyout server.key -out server.csr && openssl x509 -req -in " ..
      "server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 " ..
      "-extfile ext.cnf -out server.pem"):format(dir))
    util.write(dir .. "/hello.txt", "hello tls\n")
    port = 20000 + (tonumber(util.pid()) + 7) % 20000
    pidfile = dir .. "/pid"
    -- env -u LD_PRELOAD: under tools/sanitize.sh, ASan is preloaded
    os.execute(("cd %s && (env -u LD_PRELOAD python3 " ..
      "%s/spec/fixtures/https_server.py %d " ..
      "server.pem server.key >/dev/null 2>&1 & echo $! >%s)"):format(dir,
      os.getenv("PWD") or ".", port, pidfile))
    assert(util.wait_for(function()
      local r = os.execute(("env -u LD_PRELOAD curl -s -k -o /dev/null " ..
        "https://127.0.0.1:%d/hello.txt"):format(port))
      return r == true or r == 0
    end, 10), "the HTTPS server did not start")
  end)
  teardown(function()
    os.execute("kill $(cat " .. pidfile .. ") 2>/dev/null")
    S:close()
    os.execute("rm -rf " .. dir)
  end)

  local fetch
  before_each(function()
    fetch = S:wrap(function(url, opts)
      local http = require "synchro.aio.http"
      local r, msg, code = http.get(url, opts)
      if not r then return { msg = msg, code = code } end
      return { status = r.status, body = r.body }
    end)
  end)

  it("verifies the server with cafile=", function()
    local r = fetch(("https://127.0.0.1:%d/hello.txt"):format(port),
      { cafile = dir .. "/ca.pem" })
    assert.are.same({ status = 200, body = "hello tls\n" }, r)
  end)

  it("fails with a clear error for a wrong CA", function()
    local r = fetch(("https://127.0.0.1:%d/hello.txt"):format(port),
      { cafile = dir .. "/otherca.pem" })
    assert.are.equal("CURLE_PEER_FAILED_VERIFICATION", r.code)
    assert.is_true(has(r.msg, "TLS certificate verification failed"), r.msg)
  end)

  it("fails with a clear error for a wrong host name", function()
    -- the certificate names 127.0.0.1, not localhost
    local r = fetch(("https://localhost:%d/hello.txt"):format(port),
      { cafile = dir .. "/ca.pem" })
    assert.are.equal("CURLE_PEER_FAILED_VERIFICATION", r.code)
    assert.is_true(has(r.msg, "TLS certificate verification failed"), r.msg)
    assert.is_true(has(r.msg, "localhost"), r.msg)
  end)

  it("connects without verification when verify = false", function()
    local r = fetch(("https://127.0.0.1:%d/hello.txt"):format(port),
      { verify = false })
    assert.are.equal(200, r.status)
  end)
end)
