-- Certificates for TLS specs, made with the openssl CLI.
local proc = require "spec.helpers.proc"

local M = {}

-- A CA named `ca_name` and a server certificate it signed for "localhost"
-- (SAN DNS:localhost only), in dir: { ca =, cert =, key = } paths.
function M.localhost(dir, ca_name)
  local q = proc.quote
  local script = table.concat({
    "set -e",
    "mkdir -p " .. q(dir),
    "cd " .. q(dir),
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
      .. " -keyout ca.key -out ca.pem -days 2 -subj " .. q("/CN=" .. ca_name)
      .. " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
      .. " -keyout server.key -out server.csr -subj '/CN=localhost'",
    "printf 'subjectAltName=DNS:localhost\\nbasicConstraints=CA:FALSE\\n"
      .. "keyUsage=digitalSignature\\nextendedKeyUsage=serverAuth\\n' > ext.cnf",
    "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial"
      .. " -out server.pem -days 2 -extfile ext.cnf",
  }, "\n")
  local st, out = proc.run("sh -c " .. q(script))
  assert(st == 0, "openssl failed:\n" .. out)
  return { ca = dir .. "/ca.pem", cert = dir .. "/server.pem", key = dir .. "/server.key" }
end

return M
