-- End-to-end: jwt-auth in the real binary in front of the mock provider.
-- One issuer's keys come from a JWKS file; another's from an HTTPS URL
-- served by `openssl s_server -WWW` with a certificate from a CA made here,
-- trusted through the issuer's ca_file (verification stays on: the same URL
-- without the CA never yields keys). Tokens are signed with the openssl CLI
-- (spec/fixtures/jwt/mint.lua). Nothing the gateway logs may contain a token.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"
local certs_for = require "spec.helpers.certs"
local mint = require "spec.fixtures.jwt.mint"

local q = proc.quote

local REPO = os.getenv("SLUICE_HOME")
  or (io.open("plugins/jwt-auth.lua") and io.popen("pwd"):read("*l"))
  or "/work/main"
mint.dir = REPO .. "/spec/fixtures/jwt"

local FILE_ISS = "https://file-idp.example"
local URL_ISS = "https://url-idp.example"
local UNTRUSTED_ISS = "https://untrusted-idp.example"
local NOT_JWKS_ISS = "https://not-jwks-idp.example"
local AUD = "sluice-gateway"

local sent = {} -- every token sent, to look for in the logs at the end

local function chat(port, token)
  if token then sent[#sent + 1] = token end
  local h = { ["content-type"] = "application/json" }
  if token then h.authorization = "Bearer " .. token end
  return assert(http.chat(port, h))
end

local function token(iss, opts)
  opts = opts or {}
  opts.claims = opts.claims or mint.claims(iss, AUD, opts.extra)
  return mint.token(opts)
end

-- Retry until the answer has the wanted status (a background fetch lands).
local function eventually(port, tok, status, seconds)
  local deadline = proc.now() + (seconds or 5) * proc.slow
  local res
  repeat
    res = chat(port, tok)
    if res.status == status then return res end
    proc.sleep(0.1)
  until proc.now() > deadline
  return res
end

local function refused(res, status, code)
  assert.equals(status, res.status, res.body)
  local e = assert(http.error_of(res), res.body)
  assert.equals(code, e.code)
  return e
end

describe("jwt-auth in the gateway", function()
  local dir, www, certs, jwks_port, mock, tls_mock, gw, logs

  setup(function()
    dir = proc.tmpdir()
    certs = certs_for.localhost(dir, "sluice jwt spec CA")
    www = dir .. "/www"
    os.execute("mkdir -p " .. q(www))
    proc.write_file(www .. "/jwks.json", mint.jwks_text("jwks.json"))
    jwks_port = proc.free_port()
    local srv = proc.spawn("cd " .. q(www) .. " && exec openssl s_server -quiet -WWW"
      .. " -accept 127.0.0.1:" .. jwks_port .. " -cert " .. q(certs.cert)
      .. " -key " .. q(certs.key), dir, "jwks-server")
    proc.wait_port(srv, jwks_port)

    mock = proc.mock()
    -- a TLS server that answers 200 with JSON that is not a key set
    tls_mock = proc.mock({ tls_cert = certs.cert, tls_key = certs.key })
    local url = "https://localhost:" .. jwks_port .. "/jwks.json"
    logs = { error = dir .. "/error.log", access = dir .. "/access.log" }
    local pol = proc.policy(mock.url)
    pol.plugins = { { name = "jwt-auth", config = {
      audience = { AUD },
      claims = { team = "groups" },
      issuers = {
        { issuer = FILE_ISS, jwks_file = mint.file("jwks.json"),
          defaults = { data_class = "internal" } },
        { issuer = URL_ISS, jwks_url = url, ca_file = certs.ca,
          refresh_interval = "1s", fetch_timeout = "2s" },
        { issuer = UNTRUSTED_ISS, jwks_url = url, fetch_timeout = "2s" },
        { issuer = NOT_JWKS_ISS, jwks_url = tls_mock.url .. "/health", ca_file = certs.ca },
      },
    } } }
    gw = proc.gateway({
      policy = pol,
      config = { plugin_dirs = { REPO .. "/plugins" },
                 log = { access = logs.access, error = logs.error, level = "debug" } },
    })
  end)

  teardown(function()
    proc.stop_all()
  end)

  describe("with keys from a file", function()
    it("serves an RS256 token's request", function()
      local res = chat(gw.port, token(FILE_ISS, { key = "rsa" }))
      assert.equals(200, res.status, res.body)
      assert.matches("chat.completion", res.body)
    end)

    it("serves an ES256 token's request", function()
      local res = chat(gw.port, token(FILE_ISS, { key = "ec", extra = { groups = "finance" } }))
      assert.equals(200, res.status, res.body)
    end)

    it("refuses a request without a token with 401 and a Bearer challenge", function()
      local res = chat(gw.port, nil)
      refused(res, 401, "missing_token")
      assert.equals('Bearer realm="sluice"', res.headers["www-authenticate"])
    end)

    it("names the failing check for each bad token", function()
      local now = os.time()
      refused(chat(gw.port, token(FILE_ISS, { alg = "none" })), 401, "unsupported_algorithm")
      refused(chat(gw.port, token(FILE_ISS, { alg = "HS256" })), 401, "unsupported_algorithm")
      refused(chat(gw.port, token("https://nobody.example")), 401, "unknown_issuer")
      refused(chat(gw.port, token(FILE_ISS, { key = "rsa2" })), 401, "unknown_key")
      refused(chat(gw.port, token(FILE_ISS, { key = "stranger" })), 401, "bad_signature")
      refused(chat(gw.port, token(FILE_ISS, { extra = { exp = now - 600 } })), 401, "token_expired")
      refused(chat(gw.port, token(FILE_ISS, { extra = { nbf = now + 600 } })), 401,
        "token_not_yet_valid")
      local e = refused(chat(gw.port, token(FILE_ISS, { claims = mint.claims(FILE_ISS, "other") })),
        401, "wrong_audience")
      assert.equals("invalid_request_error", e.type)
    end)
  end)

  describe("with keys from an HTTPS URL", function()
    it("serves a token once the background fetch has landed", function()
      local res = eventually(gw.port, token(URL_ISS, { key = "ec" }), 200)
      assert.equals(200, res.status, res.body)
    end)

    it("picks up a rotated key after an unknown kid triggers a refetch", function()
      local tok = token(URL_ISS, { key = "rsa2" })
      assert.equals(200, eventually(gw.port, token(URL_ISS, { key = "rsa" }), 200).status)
      refused(chat(gw.port, tok), 401, "unknown_key")
      proc.write_file(www .. "/jwks.json", mint.jwks_text("jwks-rotated.json"))
      local res = eventually(gw.port, tok, 200, 6)
      assert.equals(200, res.status, res.body)
    end)

    it("never trusts a server whose certificate the issuer's CA did not sign", function()
      local res = chat(gw.port, token(UNTRUSTED_ISS, { key = "rsa" }))
      refused(res, 503, "keys_unavailable")
      assert.equals("5", res.headers["retry-after"])
      local deadline = proc.now() + 5 * proc.slow
      local log
      repeat
        proc.sleep(0.1)
        log = proc.read_file(logs.error) or ""
      until log:find("not trusted", 1, true) or proc.now() > deadline
      assert.truthy(log:find("certificate of localhost not trusted", 1, true), log)
      refused(chat(gw.port, token(UNTRUSTED_ISS, { key = "rsa" })), 503, "keys_unavailable")
    end)

    it("refuses with 503 while the URL answers something that is not a key set", function()
      local res = chat(gw.port, token(NOT_JWKS_ISS, { key = "rsa" }))
      refused(res, 503, "keys_unavailable")
      local want = "fetching " .. tls_mock.url
        .. "/health failed: the answer is not a JWKS document"
      local deadline = proc.now() + 5 * proc.slow
      local log
      repeat
        proc.sleep(0.1)
        log = proc.read_file(logs.error) or ""
      until log:find(want, 1, true) or proc.now() > deadline
      assert.truthy(log:find(want, 1, true), log)
    end)
  end)

  describe("its logs", function()
    it("never contain a token or any part of one", function()
      assert.is_true(#sent >= 10)
      gw:stop()
      local texts = { proc.read_file(logs.error) or "", proc.read_file(logs.access) or "",
                      gw:log() }
      local all = table.concat(texts, "\n")
      assert.truthy(all:find("jwks: fetched https://localhost:" .. jwks_port, 1, true), all)
      -- the access log holds the requests: the search below looks at real lines
      assert.truthy(texts[2]:find('"status":401', 1, true), texts[2])
      for _, tok in ipairs(sent) do
        for piece in tok:gmatch("[^.]+") do
          if #piece >= 16 then
            assert.is_nil(all:find(piece, 1, true), "a token part is in the logs")
          end
        end
      end
    end)
  end)
end)
