-- Certificates for the TLS specs, made with the openssl command in a temp
-- dir (user side, in setup): a CA, another CA, a server certificate for
-- localhost and 127.0.0.1 signed by the CA, a client certificate signed
-- by it, and a key that matches neither.
local util = require "spec.helpers.util"

local tls = {}

local function sh(cmd)
  -- without the ASan preload of tools/sanitize.sh
  local r = os.execute("(unset LD_PRELOAD; " .. cmd .. ") >/dev/null 2>&1")
  assert(r == true or r == 0, cmd)
end
tls.sh = sh

local EC = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"

--- Makes the files in a new temp dir and returns its path.
function tls.certs()
  local dir = util.tmpname()
  sh("mkdir -p " .. dir)
  for _, name in ipairs({ "ca", "otherca" }) do
    sh(("cd %s && openssl req -x509 %s -days 2 -subj /CN=%s -keyout " ..
      "%s.key -out %s.pem"):format(dir, EC, name, name, name))
  end
  util.write(dir .. "/server.cnf",
    "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
  util.write(dir .. "/client.cnf", "extendedKeyUsage=clientAuth\n")
  for _, name in ipairs({ "server", "client" }) do
    sh(("cd %s && openssl req %s -subj /CN=%s -keyout %s.key -out " ..
      "%s.csr && openssl x509 -req -in %s.csr -CA ca.pem -CAkey ca.key " ..
      "-CAcreateserial -days 2 -extfile %s.cnf -out %s.pem"):format(dir, EC,
      name, name, name, name, name, name))
  end
  sh(("cd %s && openssl genpkey -algorithm ec -pkeyopt " ..
    "ec_paramgen_curve:prime256v1 -out stray.key"):format(dir))
  return dir
end

function tls.remove(dir)
  if dir then os.execute("rm -rf " .. dir) end
end

return tls
