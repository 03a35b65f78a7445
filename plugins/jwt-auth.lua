-- jwt-auth.lua — managed identity: a caller proves who it is with a JWT
-- (Authorization: Bearer <token>) signed by an identity provider the
-- policy trusts, instead of holding a long-lived gateway key.
--
-- A token is accepted only when every check passes, in this order, and the
-- first one that fails is named in the 401 (never the token itself):
--   the header carries a bearer token shaped like a JWS   (missing_token, invalid_token)
--   its alg is RS256 or ES256 — never none, never HS*     (unsupported_algorithm)
--   its iss is a configured issuer                        (unknown_issuer)
--   that issuer's keys are loaded                         (503 keys_unavailable)
--   its kid names one of those keys                       (unknown_key)
--   the signature verifies with that key                  (bad_signature)
--   exp / nbf hold, give or take clock_skew               (token_expired, token_not_yet_valid)
--   aud names an accepted audience                        (wrong_audience)
--   the consumer claim (default sub) is present           (invalid_token)
-- Then the claims become ctx.consumer (id, app, team, owner, data_class,
-- models, regions), with per-issuer defaults for what the token leaves out.
--
-- Keys come from the policy (jwks), a file (jwks_file, read at load) or an
-- HTTPS URL (jwks_url). URL key sets are fetched in the background and
-- cached process-wide by sluice.crypto; no request ever waits on the
-- network. An unknown kid from a URL issuer triggers a refetch (at most
-- once per refresh_interval), so a rotated key is picked up within seconds.
local jwt = { name = "jwt-auth", priority = 1000 }

local crypto, hash, json = sluice.crypto, sluice.hash, sluice.json

-- What each consumer field is read from, unless the policy says otherwise.
local CLAIM_DEFAULTS = {
  consumer = "sub", app = "app", team = "team", owner = "owner",
  data_class = "data_class", models = "models", regions = "regions",
}

local function claim_fields(with_defaults)
  local f = {}
  for k, v in pairs(CLAIM_DEFAULTS) do
    f[k] = { type = "string", default = with_defaults and v or nil }
  end
  return f
end

local strings = { type = "array", elements = { type = "string" } }

jwt.schema = {
  issuers = { type = "array", required = true, elements = { type = "record", fields = {
    issuer = { type = "string", required = true },     -- the token's iss, exactly
    jwks = { type = "record", fields = { keys = { type = "array", required = true } } },
    jwks_file = { type = "string" },
    jwks_url = { type = "string", check = function(v)
      return v:sub(1, 8) == "https://", "must be an https:// URL" end },
    ca_file = { type = "string" },                     -- trust for jwks_url (default: system CAs)
    audience = strings,                                -- overrides the plugin-wide audience
    cache_ttl = { type = "duration", default = 300000, min = 1000 },
    refresh_interval = { type = "duration", default = 30000, min = 1000 },
    fetch_timeout = { type = "duration", default = 5000, min = 100, max = 60000 },
    claims = { type = "record", fields = claim_fields(false) },
    defaults = { type = "record", fields = {
      app = { type = "string" }, team = { type = "string" }, owner = { type = "string" },
      data_class = { type = "string" }, models = strings, regions = strings,
    } },
  } } },
  audience = strings,
  clock_skew = { type = "duration", default = 60000, min = 0, max = 600000 },
  require_exp = { type = "boolean", default = true },
  claims = { type = "record", default = {}, fields = claim_fields(true) },
  forward_claims = { type = "array", elements = { type = "string" }, default = {} },
  optional = { type = "boolean", default = false },
  max_token_bytes = { type = "integer", default = 16384, min = 256, max = 65536 },
}

-- ---- key sets ----------------------------------------------------------------

local KTY_FOR_ALG = { RS256 = "RSA", ES256 = "EC" }

-- A JWKS document (text or table) as { by_kid = {}, list = {} } of parsed
-- keys; keys that cannot verify RS256/ES256 are skipped with a warning.
local function parse_jwks(doc, issuer)
  if type(doc) == "string" then
    local err
    doc, err = json.decode(doc)
    if type(doc) ~= "table" then return nil, "not JSON: " .. tostring(err) end
  end
  if type(doc.keys) ~= "table" then return nil, "no \"keys\" array" end
  local set = { by_kid = {}, list = {} }
  for i, jwk in ipairs(doc.keys) do
    local kid = type(jwk) == "table" and jwk.kid
    local usable = type(jwk) == "table" and (jwk.use == nil or jwk.use == "sig")
      and (jwk.alg == nil or KTY_FOR_ALG[jwk.alg] == jwk.kty)
    local key, err
    if usable then key, err = crypto.jwk(jwk) end
    if key then
      local k = { kid = type(kid) == "string" and kid or nil, kty = jwk.kty, key = key }
      set.list[#set.list + 1] = k
      if k.kid then set.by_kid[k.kid] = k end
    elseif err then
      sluice.log.warn("issuer", issuer, "key", tostring(kid or i), "skipped:", err)
    end
  end
  return set
end

-- Key sets of URL issuers, per worker: refreshed from sluice.crypto's cache.
local fetched = {}
local warned = {} -- issuer -> when "no keys yet" was last logged

local function jwks_opts(iss, refresh)
  return { ca_file = iss.ca_file, since = fetched[iss.issuer] and fetched[iss.issuer].gen,
           refresh = refresh, min_refresh_s = iss.refresh_interval / 1000,
           timeout_ms = iss.fetch_timeout }
end

-- The issuer's keys now, or nil and why not ("pending" / "error: …").
local function keys_of(iss, refresh)
  if iss.static then return iss.static end
  local text, gen = crypto.jwks(iss.jwks_url, iss.cache_ttl / 1000, jwks_opts(iss, refresh))
  local have = fetched[iss.issuer]
  if type(text) == "string" then
    local set, err = parse_jwks(text, iss.issuer)
    if set then
      set.gen = gen
      fetched[iss.issuer] = set
      return set
    end
    sluice.log.warn("issuer", iss.issuer, "key set from", iss.jwks_url, "ignored:", err)
    if have then return have end
    return nil, "error: " .. err
  end
  if text == false and have then return have end
  return have, gen
end

function jwt.init(conf)
  conf.by_issuer = {}
  for i, iss in ipairs(conf.issuers) do
    local where = "issuers[" .. i .. "]"
    local n = (iss.jwks and 1 or 0) + (iss.jwks_file and 1 or 0) + (iss.jwks_url and 1 or 0)
    if n ~= 1 then
      error(where .. ": give exactly one of jwks, jwks_file, jwks_url", 0)
    end
    if conf.by_issuer[iss.issuer] then
      error(where .. ": issuer " .. iss.issuer .. " is listed twice", 0)
    end
    iss.audience = iss.audience or conf.audience
    if not iss.audience or #iss.audience == 0 then
      error(where .. ": no audience (set audience on the issuer or the plugin)", 0)
    end
    iss.accepts = {}
    for _, a in ipairs(iss.audience) do iss.accepts[a] = true end
    iss.claim = {}
    for field, default in pairs(conf.claims) do
      iss.claim[field] = (iss.claims and iss.claims[field]) or default
    end
    iss.defaults = iss.defaults or {}
    if not iss.jwks_url then
      local doc = iss.jwks
      if iss.jwks_file then
        local text, err = crypto.jwks_file(iss.jwks_file)
        if not text then error(where .. ": " .. err, 0) end
        doc = text
      end
      local set, err = parse_jwks(doc, iss.issuer)
      if not set then error(where .. ": key set " .. err, 0) end
      if #set.list == 0 then error(where .. ": no usable RS256/ES256 key in the key set", 0) end
      iss.static = set
    else
      keys_of(iss, false) -- start the first fetch now, not on the first request
    end
    conf.by_issuer[iss.issuer] = iss
  end
  conf.skew = conf.clock_skew / 1000
  conf.forward = {}
  for _, c in ipairs(conf.forward_claims) do conf.forward[#conf.forward + 1] = c end
end

-- ---- the request ---------------------------------------------------------------

local CHALLENGE = 'Bearer realm="sluice"'

local function refuse(ctx, code, message)
  return ctx:deny(401, code, message,
    { ["www-authenticate"] = CHALLENGE .. ', error="invalid_token"' })
end

-- The bearer token of the request, or nil.
local function bearer(ctx, conf)
  local h = ctx.request:header("authorization")
  if not h or #h < 8 or h:sub(1, 7):lower() ~= "bearer " then return nil end
  local s = h:find("[^ ]", 8)
  if not s then return nil end
  local token = h:sub(s)
  local e = token:find(" ", 1, true)
  if e then
    if token:find("[^ ]", e) then return nil, "bad" end
    token = token:sub(1, e - 1)
  end
  if #token > conf.max_token_bytes then return nil, "bad" end
  return token
end

-- Decode one base64url JSON part into a table.
local function part(s)
  local raw = hash.base64url_decode(s)
  if not raw then return nil end
  local v = json.decode(raw)
  if type(v) ~= "table" then return nil end
  return v
end

-- Plain copies of claim values (decoded JSON carries markers; null drops).
local function plain(v, depth)
  local tv = type(v)
  if tv == "string" or tv == "number" or tv == "boolean" then return v end
  if tv ~= "table" or depth > 8 then return nil end
  local c = {}
  for k, x in pairs(v) do c[k] = plain(x, depth + 1) end
  return c
end

-- A list claim: a JSON array of strings, or one string of space- or
-- comma-separated names (as OAuth scopes are written).
local function list_claim(v)
  if type(v) == "string" then
    local out = {}
    for name in v:gmatch("[^%s,]+") do out[#out + 1] = name end
    return out
  end
  -- absent: the issuer's default; present but neither a list nor a
  -- string (false, a number): allows nothing, never everything
  if type(v) ~= "table" then return v ~= nil and {} or nil end
  local out = {}
  for _, x in ipairs(v) do
    if type(x) == "string" then out[#out + 1] = x end
  end
  return out
end

local function text_claim(v)
  if type(v) == "string" then return v end
  if type(v) == "number" then return tostring(v) end
  return nil
end

local function audience_ok(aud, accepts)
  if type(aud) == "string" then return accepts[aud] == true end
  if type(aud) == "table" then
    for _, a in ipairs(aud) do
      if accepts[a] then return true end
    end
  end
  return false
end

-- The key that must have signed: by kid, or the only key of the alg's
-- type when the token names none.
local function pick_key(set, header, alg)
  local kty = KTY_FOR_ALG[alg]
  if header.kid ~= nil then
    local k = type(header.kid) == "string" and set.by_kid[header.kid]
    if k and k.kty == kty then return k end
    return nil
  end
  local found
  for _, k in ipairs(set.list) do
    if k.kty == kty then
      if found then return nil end
      found = k
    end
  end
  return found
end

local function short(s) return #s > 200 and s:sub(1, 200) .. "…" or s end

function jwt.access(ctx, conf)
  if ctx.consumer ~= nil then return end -- another auth plugin identified the caller

  local token, bad = bearer(ctx, conf)
  if not token then
    if bad then return refuse(ctx, "invalid_token", "the bearer token is malformed") end
    if conf.optional then return end
    return ctx:deny(401, "missing_token",
      "this API needs a bearer token: send Authorization: Bearer <JWT>",
      { ["www-authenticate"] = CHALLENGE })
  end

  local d1 = token:find(".", 1, true)
  local d2 = d1 and token:find(".", d1 + 1, true)
  if not d2 or token:find(".", d2 + 1, true) then
    if conf.optional and not d1 then return end -- not a JWT: left to another auth plugin
    return refuse(ctx, "invalid_token", "the bearer token is not a JWT (header.payload.signature)")
  end
  local header, claims = part(token:sub(1, d1 - 1)), part(token:sub(d1 + 1, d2 - 1))
  local sig = hash.base64url_decode(token:sub(d2 + 1))
  if not header or not claims or not sig then
    return refuse(ctx, "invalid_token", "the bearer token is not a well-formed JWT")
  end

  if header.crit ~= nil then -- RFC 7515 §4.1.11: extensions we do not understand
    return refuse(ctx, "invalid_token",
      "the token requires header extensions (crit) this gateway does not support")
  end
  local alg = header.alg
  if not KTY_FOR_ALG[alg] then
    return refuse(ctx, "unsupported_algorithm",
      "the token's signing algorithm is not accepted (only RS256 and ES256)")
  end

  local iss = type(claims.iss) == "string" and conf.by_issuer[claims.iss]
  if not iss then
    return refuse(ctx, "unknown_issuer", "the token's issuer (iss) is not trusted by this gateway")
  end

  local set, why = keys_of(iss, false)
  if not set then
    local now = sluice.time.monotonic_ms()
    if (warned[iss.issuer] or -1e12) < now - 10000 then -- one line per 10 s, not per request
      warned[iss.issuer] = now
      sluice.log.warn("issuer", iss.issuer, "has no keys yet:", why)
    end
    return ctx:deny(503, "keys_unavailable",
      "the signing keys of the token's issuer are not available yet; retry shortly",
      { ["retry-after"] = "5" })
  end

  local key = pick_key(set, header, alg)
  if not key and iss.jwks_url then
    set = keys_of(iss, true) or set -- a rotated key: fetch again (rate-limited), in the background
    key = pick_key(set, header, alg)
  end
  if not key then
    return refuse(ctx, "unknown_key",
      "the token's signing key (kid) is not among its issuer's current keys")
  end

  if not crypto.verify(alg, key.key, token:sub(1, d2 - 1), sig) then
    return refuse(ctx, "bad_signature", "the token's signature does not verify")
  end

  local now = sluice.time.now()
  local exp, nbf = claims.exp, claims.nbf
  if exp == nil and conf.require_exp then
    return refuse(ctx, "invalid_token", "the token has no expiry (exp)")
  end
  if (exp ~= nil and type(exp) ~= "number") or (nbf ~= nil and type(nbf) ~= "number") then
    return refuse(ctx, "invalid_token", "the token's exp or nbf is not a number of seconds")
  end
  if exp and now > exp + conf.skew then
    return refuse(ctx, "token_expired", "the token has expired")
  end
  if nbf and now + conf.skew < nbf then
    return refuse(ctx, "token_not_yet_valid", "the token is not valid yet (nbf)")
  end
  if not audience_ok(claims.aud, iss.accepts) then
    return refuse(ctx, "wrong_audience", "the token was not issued for this gateway (aud)")
  end

  local claim, defaults = iss.claim, iss.defaults
  local id = text_claim(claims[claim.consumer])
  if not id or id == "" then
    return refuse(ctx, "invalid_token",
      "the token has no '" .. claim.consumer .. "' claim naming the caller")
  end

  local selected = { iss = claims.iss, sub = text_claim(claims.sub), aud = plain(claims.aud, 0) }
  for _, name in pairs(claim) do
    if claims[name] ~= nil then selected[name] = plain(claims[name], 0) end
  end
  for _, name in ipairs(conf.forward) do
    if claims[name] ~= nil then selected[name] = plain(claims[name], 0) end
  end

  ctx.consumer = {
    id = id,
    app = text_claim(claims[claim.app]) or defaults.app,
    team = text_claim(claims[claim.team]) or defaults.team,
    owner = text_claim(claims[claim.owner]) or defaults.owner,
    data_class = text_claim(claims[claim.data_class]) or defaults.data_class,
    models = list_claim(claims[claim.models]) or defaults.models,
    regions = list_claim(claims[claim.regions]) or defaults.regions,
    source = "jwt-auth",
    claims = selected,
  }
  ctx:decision("allow", "jwt from issuer " .. short(iss.issuer) .. ", subject " .. short(id))
end

return jwt
