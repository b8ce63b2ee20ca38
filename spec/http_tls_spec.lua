-- synchro.aio.http over TLS: python3's http.server wrapped with ssl, with
-- a CA and a server certificate for 127.0.0.1 (only) made with the
-- openssl command in a temp dir (spec/helpers/https.lua). Verification is on
-- by default: the right CA passes; a wrong CA and a wrong host name fail
-- with an error that says the certificate did not verify.
local synchro = require "synchro"
local util = require "spec.helpers.util"
local https = require "spec.helpers.https"

local function has(s, part) return type(s) == "string" and
  s:find(part, 1, true) ~= nil end

describe("synchro.aio.http over TLS", function()
  local S, server, port, dir
  setup(function()
    S = synchro.new({ name = "https-spec" })
    local root = util.tmpname()
    os.execute("mkdir -p " .. root)
    util.write(root .. "/hello.txt", "hello tls\n")
    server = assert(https.start(root))
    port, dir = server.port, server.dir
  end)
  teardown(function()
    server:stop()
    S:close()
    os.execute("rm -rf " .. server.root)
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
