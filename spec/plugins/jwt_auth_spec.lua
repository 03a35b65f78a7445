-- jwt-auth: managed identity from RS256/ES256 JWTs. Tokens are signed by
-- the openssl CLI with the fixture keys in spec/fixtures/jwt/ (see
-- make-keys.sh there), so every check runs against real signatures.
local t = require "sluice.test"
local mint = require "spec.fixtures.jwt.mint"
local json = require "sluice.json"
local crypto = require "sluice.crypto"
local hash = require "sluice.hash"

local ISS = "https://idp.example.com"
local AUD = "sluice"

local function chain(config, extra_items)
  local items = { { name = "jwt-auth", config = config },
                  { name = "keep-ctx", path = mint.file("keep-ctx.lua") } }
  for _, it in ipairs(extra_items or {}) do items[#items + 1] = it end
  return t.chain(items)
end

local function base_config(over)
  local c = {
    audience = { AUD },
    issuers = { { issuer = ISS, jwks_file = mint.file("jwks.json") } },
  }
  for k, v in pairs(over or {}) do c[k] = v end
  return c
end

local function call(ch, token)
  return t.request(ch, { headers = { authorization = token and ("Bearer " .. token) or nil },
                         json = { model = "gpt-4o" } })
end

local function token(opts)
  opts = opts or {}
  opts.claims = opts.claims or mint.claims(ISS, AUD)
  return mint.token(opts)
end

local function denied(res, status, code)
  assert.equals("deny", res.action, "expected a denial, got " .. tostring(res.action)
    .. " " .. tostring(res.message))
  assert.equals(status, res.status)
  assert.equals(code, res.code)
  assert.equals("jwt-auth", res.plugin)
end

describe("jwt-auth plugin", function()
  local ch

  setup(function()
    ch = chain(base_config())
  end)

  describe("accepts", function()
    it("a valid RS256 token and makes its subject the consumer", function()
      local res = call(ch, token({ key = "rsa" }))
      assert.equals("ok", res.action, res.message)
      local c = res.ctx.consumer
      assert.equals("svc-invoices", c.id)
      assert.equals("jwt-auth", c.source)
      assert.equals(ISS, c.claims.iss)
      assert.equals("svc-invoices", c.claims.sub)
    end)

    it("a valid ES256 token (raw r||s signature)", function()
      local res = call(ch, token({ key = "ec" }))
      assert.equals("ok", res.action, res.message)
      assert.equals("svc-invoices", res.ctx.consumer.id)
    end)

    it("a token without kid when the issuer has one key of its type", function()
      local res = call(ch, token({ key = "ec", kid = false }))
      assert.equals("ok", res.action, res.message)
    end)

    it("an audience list that names this gateway among others", function()
      local res = call(ch, token({ claims = mint.claims(ISS, { "other", AUD }) }))
      assert.equals("ok", res.action, res.message)
    end)

    it("records an allow decision naming issuer and subject, never the token", function()
      local tok = token()
      local res = call(ch, tok)
      local ds = t.decisions(res.ctx)
      assert.equals(1, #ds)
      assert.equals("allow", ds[1].outcome)
      assert.equals("jwt from issuer " .. ISS .. ", subject svc-invoices", ds[1].reason)
      local sig = tok:match("[^.]+$")
      assert.is_nil(json.encode(ds):find(sig, 1, true))
    end)

    it("keys given inline in the policy", function()
      local inline = chain(base_config({ issuers = { { issuer = ISS,
        jwks = json.decode(mint.jwks_text()) } } }))
      assert.equals("ok", call(inline, token({ key = "ec" })).action)
    end)
  end)

  describe("refuses", function()
    it("a request without a bearer token with 401 missing_token", function()
      local res = call(ch, nil)
      denied(res, 401, "missing_token")
      assert.equals('Bearer realm="sluice"', res.response_headers["www-authenticate"])
    end)

    it("a bearer that is not a JWT with 401 invalid_token", function()
      denied(call(ch, "sk-not-a-jwt"), 401, "invalid_token")
      denied(call(ch, "a.b.c"), 401, "invalid_token")
      denied(call(ch, token() .. ".extra"), 401, "invalid_token")
    end)

    it("alg none with 401 unsupported_algorithm", function()
      denied(call(ch, token({ alg = "none" })), 401, "unsupported_algorithm")
    end)

    it("HS256 (a shared secret would let anyone holding it mint tokens)", function()
      denied(call(ch, token({ alg = "HS256" })), 401, "unsupported_algorithm")
    end)

    it("a token with critical header extensions with 401 invalid_token", function()
      local res = call(ch, token({ header = { crit = { "exp" } } }))
      denied(res, 401, "invalid_token")
      assert.matches("crit", res.message)
    end)

    it("an issuer the policy does not trust with 401 unknown_issuer", function()
      local res = call(ch, token({ claims = mint.claims("https://evil.example", AUD) }))
      denied(res, 401, "unknown_issuer")
    end)

    it("a kid that is not in the issuer's key set with 401 unknown_key", function()
      denied(call(ch, token({ key = "rsa2" })), 401, "unknown_key")
    end)

    it("an RS256 token whose kid names the EC key with 401 unknown_key", function()
      denied(call(ch, token({ key = "rsa", kid = "ec-1" })), 401, "unknown_key")
    end)

    it("a token signed by a key outside the set with 401 bad_signature", function()
      denied(call(ch, token({ key = "stranger" })), 401, "bad_signature")
    end)

    it("a token whose claims were changed after signing with 401 bad_signature", function()
      local tok = token()
      local h, _, s = tok:match("^([^.]+)%.([^.]+)%.([^.]+)$")
      local forged = mint.claims(ISS, AUD, { sub = "admin" })
      local p = hash.base64url_encode(json.encode(forged))
      denied(call(ch, h .. "." .. p .. "." .. s), 401, "bad_signature")
    end)

    it("an expired token with 401 token_expired", function()
      local now = os.time()
      local res = call(ch, token({ claims = mint.claims(ISS, AUD, { exp = now - 120 }) }))
      denied(res, 401, "token_expired")
      assert.equals('Bearer realm="sluice", error="invalid_token"',
        res.response_headers["www-authenticate"])
    end)

    it("a token not valid yet with 401 token_not_yet_valid", function()
      local now = os.time()
      denied(call(ch, token({ claims = mint.claims(ISS, AUD, { nbf = now + 300 }) })),
        401, "token_not_yet_valid")
    end)

    it("a token for another audience with 401 wrong_audience", function()
      denied(call(ch, token({ claims = mint.claims(ISS, "someone-else") })), 401, "wrong_audience")
      local no_aud = mint.claims(ISS, AUD)
      no_aud.aud = nil
      denied(call(ch, token({ claims = no_aud })), 401, "wrong_audience")
    end)

    it("a token without exp unless require_exp is off", function()
      local c = mint.claims(ISS, AUD)
      c.exp = nil
      denied(call(ch, token({ claims = c })), 401, "invalid_token")
      local lax = chain(base_config({ require_exp = false }))
      assert.equals("ok", call(lax, token({ claims = c })).action)
    end)

    it("a token without the consumer claim with 401 invalid_token", function()
      local c = mint.claims(ISS, AUD)
      c.sub = nil
      local res = call(ch, token({ claims = c }))
      denied(res, 401, "invalid_token")
      assert.matches("'sub' claim", res.message)
    end)

    it("never echoes the token in its message", function()
      local tok = token({ key = "stranger" })
      local res = call(ch, tok)
      for piece in tok:gmatch("[^.]+") do
        assert.is_nil(res.message:find(piece, 1, true))
      end
    end)
  end)

  describe("clock skew", function()
    it("accepts a token expired within the skew and refuses it without skew", function()
      local c = mint.claims(ISS, AUD, { exp = os.time() - 20 })
      local tok = token({ claims = c })
      assert.equals("ok", call(ch, tok).action) -- default skew 60s
      local strict = chain(base_config({ clock_skew = 0 }))
      denied(call(strict, tok), 401, "token_expired")
    end)

    it("accepts a token whose nbf is just ahead within the skew", function()
      local tok = token({ claims = mint.claims(ISS, AUD, { nbf = os.time() + 20 }) })
      assert.equals("ok", call(ch, tok).action)
      denied(call(chain(base_config({ clock_skew = "5s" })), tok), 401, "token_not_yet_valid")
    end)
  end)

  describe("claims mapping", function()
    it("maps the default claim names onto the consumer", function()
      local c = mint.claims(ISS, AUD, { app = "invoices", team = "finance", owner = "ana",
        data_class = "internal", models = { "gpt-4o", "claude" }, regions = "eu us" })
      local res = call(ch, token({ claims = c }))
      assert.equals("ok", res.action, res.message)
      local con = res.ctx.consumer
      assert.equals("invoices", con.app)
      assert.equals("finance", con.team)
      assert.equals("ana", con.owner)
      assert.equals("internal", con.data_class)
      assert.same({ "gpt-4o", "claude" }, con.models)
      assert.same({ "eu", "us" }, con.regions)
      assert.same({ "gpt-4o", "claude" }, con.claims.models)
    end)

    it("reads configured claim names and fills per-issuer defaults", function()
      local ch2 = chain(base_config({
        claims = { consumer = "client_id", team = "https://corp/team" },
        issuers = { { issuer = ISS, jwks_file = mint.file("jwks.json"),
          claims = { app = "azp" },
          defaults = { data_class = "confidential", team = "unassigned", regions = { "eu" } } } },
      }))
      local c = mint.claims(ISS, AUD, { client_id = "batch-7", azp = "batch-app",
        ["https://corp/team"] = "platform" })
      local res = call(ch2, token({ claims = c }))
      assert.equals("ok", res.action, res.message)
      local con = res.ctx.consumer
      assert.equals("batch-7", con.id)
      assert.equals("batch-app", con.app)
      assert.equals("platform", con.team)
      assert.equals("confidential", con.data_class)
      assert.same({ "eu" }, con.regions)
      assert.is_nil(con.models) -- nil: every model
      assert.equals("batch-7", con.claims.client_id)

      local c2 = mint.claims(ISS, AUD, { client_id = "batch-8" })
      assert.equals("unassigned", call(ch2, token({ claims = c2 })).ctx.consumer.team)
    end)

    it("allows nothing, not everything, for a models or regions claim of the wrong type", function()
      local ch2 = chain(base_config({
        issuers = { { issuer = ISS, jwks_file = mint.file("jwks.json"),
          defaults = { regions = { "eu" } } } },
      }))
      local c = mint.claims(ISS, AUD, { models = false, regions = 7 })
      local res = call(ch2, token({ claims = c }))
      assert.equals("ok", res.action, res.message)
      assert.same({}, res.ctx.consumer.models)
      assert.same({}, res.ctx.consumer.regions)
    end)

    it("shares the Authorization header with key-auth listed after it", function()
      local key = "sk-gw-combined-1"
      local ch2 = chain(base_config({ optional = true }), { { name = "key-auth", config = {
        consumers = { batch = { keys = { { hash = "sha256:" .. require("sluice.hash").sha256(key) } } } } } } })
      local res = call(ch2, token())
      assert.equals("ok", res.action, res.message)
      assert.equals("jwt-auth", res.ctx.consumer.source)
      res = call(ch2, key)
      assert.equals("ok", res.action, res.message)
      assert.equals("batch", res.ctx.consumer.id)
      assert.equals(401, call(ch2, "sk-not-issued").status)
    end)

    it("copies forward_claims into consumer.claims and nothing else", function()
      local ch3 = chain(base_config({ forward_claims = { "tenant" } }))
      local c = mint.claims(ISS, AUD, { tenant = "acme", secret_stuff = "x" })
      local con = call(ch3, token({ claims = c })).ctx.consumer
      assert.equals("acme", con.claims.tenant)
      assert.is_nil(con.claims.secret_stuff)
    end)

    it("leaves a consumer another auth plugin set alone", function()
      local ch4 = t.chain({
        { name = "set-consumer", path = mint.file("set-consumer.lua") },
        { name = "jwt-auth", config = base_config() },
        { name = "keep-ctx", path = mint.file("keep-ctx.lua") },
      })
      local res = call(ch4, nil)
      assert.equals("ok", res.action)
      assert.equals("key-user", res.ctx.consumer.id)
    end)

    it("with optional, lets requests without a JWT through without a consumer", function()
      local opt = chain(base_config({ optional = true }))
      local res = call(opt, nil)
      assert.equals("ok", res.action)
      assert.is_nil(res.ctx.consumer)
      assert.equals("ok", call(opt, "sk-an-api-key").action)
      denied(call(opt, token({ key = "stranger" })), 401, "bad_signature")
    end)
  end)

  describe("keys from a URL", function()
    it("answers 503 keys_unavailable while the first fetch has not landed", function()
      local port = 1 -- nothing listens: the fetch fails in the background
      local ch5 = chain(base_config({ issuers = { { issuer = ISS,
        jwks_url = "https://127.0.0.1:" .. port .. "/jwks.json", fetch_timeout = 500 } } }))
      local res = call(ch5, token())
      denied(res, 503, "keys_unavailable")
      assert.equals("5", res.response_headers["retry-after"])
    end)
  end)

  describe("configuration", function()
    it("refuses an issuer with two key sources", function()
      local _, err = t.try_chain({ { name = "jwt-auth", config = base_config({ issuers = { {
        issuer = ISS, jwks_file = mint.file("jwks.json"), jwks_url = "https://x/jwks" } } }) } })
      assert.matches("exactly one of jwks, jwks_file, jwks_url", err)
    end)

    it("refuses a configuration without an audience", function()
      local _, err = t.try_chain({ { name = "jwt-auth", config = {
        issuers = { { issuer = ISS, jwks_file = mint.file("jwks.json") } } } } })
      assert.matches("no audience", err)
    end)

    it("refuses a JWKS URL that is not https", function()
      local _, err = t.try_chain({ { name = "jwt-auth", config = base_config({ issuers = { {
        issuer = ISS, jwks_url = "http://idp/jwks" } } }) } })
      assert.matches("must be an https:// URL", err)
    end)

    it("refuses a key file that is not a JWKS document", function()
      local _, err = t.try_chain({ { name = "jwt-auth", config = base_config({ issuers = { {
        issuer = ISS, jwks_file = mint.file("rsa.pem") } } }) } })
      assert.matches("not a JWKS document", err)
      assert.is_nil(err:find("PRIVATE", 1, true))
    end)
  end)
end)

describe("sluice.crypto", function()
  local keys = json.decode(mint.jwks_text()).keys

  it("verifies with a key table or a parsed key, and refuses other algorithms", function()
    local tok = mint.token({ key = "rsa", claims = { a = 1 } })
    local input, s = tok:match("^(.+)%.([^.]+)$")
    local sig = hash.base64url_decode(s)
    assert.is_true(crypto.verify("RS256", keys[1], input, sig))
    local key = assert(crypto.jwk(keys[1]))
    assert.is_true(crypto.verify("RS256", key, input, sig))
    assert.is_false(crypto.verify("RS256", key, input .. "x", sig))
    local ok, why = crypto.verify("HS256", key, input, sig)
    assert.is_false(ok)
    assert.matches("only RS256 and ES256", why)
    assert.is_false((crypto.verify("ES256", key, input, sig)))
  end)

  it("refuses short RSA keys and points off the curve", function()
    local short_n = hash.base64url_encode(string.rep("\255", 128)) -- 1024 bits
    local k, err = crypto.jwk({ kty = "RSA", n = short_n, e = "AQAB" })
    assert.is_nil(k)
    assert.matches("2048", err)
    local ec = {}
    for kk, v in pairs(keys[2]) do ec[kk] = v end
    ec.y = ec.x
    k, err = crypto.jwk(ec)
    assert.is_nil(k)
    assert.matches("P%-256", err)
  end)

  it("gives a key a locked metatable inside a plugin", function()
    local ch = t.chain({ { name = "key-probe", path = mint.file("key-probe.lua"),
                          config = { jwk = keys[2] } } })
    local res = t.request(ch, {})
    assert.equals("deny", res.action)
    assert.equals("locked", res.code)
  end)
end)
