-- key-auth.lua — every caller is a known consumer, identified by its API key.
--
-- A request must present a gateway API key: `Authorization: Bearer <key>`
-- (OpenAI SDKs, and the Anthropic SDK from 1.x), `api-key: <key>` (Azure
-- OpenAI SDKs) or `x-api-key: <key>` (Anthropic's API and its older SDKs).
-- The key names a consumer — an application of a team, with an owner, the
-- data class it may send, the models and regions it may use — which later
-- plugins (catalog, data boundary, quotas) read from ctx.consumer.
--
-- Policy holds only the SHA-256 of each key, so a leaked policy repository
-- leaks no key. A consumer may hold several keys (rotation), each with a
-- name and an expiry. A presented key is hashed and looked up in a table
-- built at load (once per worker and policy version: valid keys are
-- remembered); the gateway's key header is then removed, so a
-- client's gateway key never reaches a provider (the gateway sends the
-- backend's own credential).
--
--   no key            401 missing_api_key   (www-authenticate: Bearer)
--   unknown key       401 invalid_api_key
--   expired key       401 expired_api_key
--   revoked key       403 api_key_revoked
--   disabled consumer 403 consumer_disabled
local key_auth = { name = "key-auth", priority = 1000 }

local sha256, equal = sluice.hash.sha256, sluice.hash.equal
local find, sub, lower, time = string.find, string.sub, string.lower, os.time

local function header_name(v)
  return find(v, "^[!#$%%&'*+%-.^_`|~%w]+$") ~= nil, "is not an HTTP header name"
end

local function key_hash(v)
  return find(v, "^sha256:%x+$") ~= nil and #v == 71,
    "expected sha256: and 64 hex digits (printf %s \"$KEY\" | sha256sum)"
end

local strings = { type = "array", elements = { type = "string" } }

key_auth.schema = {
  consumers = { type = "map", required = true, values = { type = "record", fields = {
    app        = { type = "string" },  -- default: the consumer's id
    team       = { type = "string" },
    owner      = { type = "string" },
    data_class = { type = "string" },
    models     = strings,              -- absent: every model
    regions    = strings,              -- absent: any region
    raise      = strings,              -- classes it may raise to by header
    disabled   = { type = "boolean", default = false },
    keys = { type = "array", default = {}, elements = { type = "record", fields = {
      hash    = { type = "string", required = true, check = key_hash },
      name    = { type = "string" },
      expires = { type = "date" },
      revoked = { type = "boolean", default = false },
    } } },
  } } },
  anonymous = { type = "string" },  -- consumer for requests without a key
  bearer_headers = { type = "array", default = { "Authorization" },
                     elements = { type = "string", check = header_name } },
  key_headers = { type = "array", default = { "api-key", "x-api-key" },
                  elements = { type = "string", check = header_name } },
}

-- ---- init: the consumers as ctx.consumer will see them, keys by hash ----------

local function day_or_time(t)
  if t % 86400 == 0 then return os.date("!%Y-%m-%d", t) end
  return os.date("!%Y-%m-%dT%H:%M:%SZ", t)
end

local function consumer_of(id, c)
  return { id = id, app = c.app or id, team = c.team, owner = c.owner,
           data_class = c.data_class, models = c.models, regions = c.regions,
           raise = c.raise, source = "key-auth" }
end

function key_auth.init(conf)
  local ids = {}
  for id in pairs(conf.consumers) do ids[#ids + 1] = id end
  table.sort(ids) -- so an error names the same pair on every load

  local by_hash, where = {}, {}
  for _, id in ipairs(ids) do
    local c = conf.consumers[id]
    local consumer = consumer_of(id, c)
    for i, k in ipairs(c.keys) do
      local hex = lower(sub(k.hash, 8))
      local at = ("consumers.%s.keys[%d]"):format(id, i)
      if where[hex] then
        error(at .. " has the same hash as " .. where[hex] .. ": a key belongs to one consumer", 0)
      end
      where[hex] = at
      local label = k.name and (" (key " .. k.name .. ")") or ""
      by_hash[hex] = {
        hex = hex, id = id, consumer = consumer, disabled = c.disabled,
        revoked = k.revoked, expires = k.expires,
        reason = "consumer " .. id .. label,
        expired_message = k.expires and
          ("this API key expired on " .. day_or_time(k.expires) .. "; ask for a new key"),
      }
    end
  end
  conf.by_hash = by_hash
  conf.valid = {} -- presented key -> by_hash entry, filled by access

  if conf.anonymous then
    local c = conf.consumers[conf.anonymous]
    if not c then
      error("anonymous names '" .. conf.anonymous .. "', which is not one of the consumers", 0)
    end
    conf.anonymous_entry = not c.disabled and {
      consumer = consumer_of(conf.anonymous, c),
      reason = "anonymous consumer " .. conf.anonymous,
    } or nil
  end

  -- Bearer headers first, then raw ones; every one of them is removed.
  local lookup, names = {}, {}
  for _, h in ipairs(conf.bearer_headers) do
    lookup[#lookup + 1] = { name = lower(h), bearer = true }
    names[#names + 1] = h .. ": Bearer <key>"
  end
  for _, h in ipairs(conf.key_headers) do
    lookup[#lookup + 1] = { name = lower(h), bearer = false }
    names[#names + 1] = h .. ": <key>"
  end
  if #lookup == 0 then
    error("bearer_headers and key_headers are both empty: no header could carry a key", 0)
  end
  conf.lookup = lookup
  conf.missing_message = "this gateway needs an API key: send " ..
    table.concat(names, ", or ")
  conf.missing_headers = { ["www-authenticate"] = "Bearer" }
  conf.invalid_headers = { ["www-authenticate"] = 'Bearer error="invalid_token"' }
end

-- ---- access ------------------------------------------------------------------

-- The key the request presents, or nil. The first configured header that
-- carries one decides: a wrong key there is refused even if another header
-- holds a good one. RFC 9110 §11.1: the auth scheme is case-insensitive.
local function presented_key(req, lookup)
  for i = 1, #lookup do
    local h = lookup[i]
    local v = req:header(h.name)
    if v and v ~= "" then
      if not h.bearer then return v end
      local _, e = find(v, "^[Bb][Ee][Aa][Rr][Ee][Rr] +")
      if e and e < #v then return sub(v, e + 1) end
    end
  end
  return nil
end

-- The gateway's key is for the gateway: none of the key headers goes upstream.
local function remove_key_headers(req, lookup)
  for i = 1, #lookup do req:remove_header(lookup[i].name) end
end

function key_auth.access(ctx, conf)
  if ctx.consumer ~= nil then return end -- an earlier auth plugin identified the caller
  local req = ctx.request
  local key = presented_key(req, conf.lookup)

  if key == nil then
    local anon = conf.anonymous_entry
    if not anon then
      return ctx:deny(401, "missing_api_key", conf.missing_message, conf.missing_headers)
    end
    remove_key_headers(req, conf.lookup)
    ctx.consumer = anon.consumer
    ctx:decision("allow", anon.reason)
    return
  end

  -- A key this worker already found valid under this policy is not hashed
  -- again (only such keys are kept, so the policy bounds the memo).
  local k = conf.valid[key]
  if not k then
    local hex = sha256(key)
    k = conf.by_hash[hex]
    if not k or not equal(hex, k.hex) then
      return ctx:deny(401, "invalid_api_key", "the API key is not valid for this gateway",
                      conf.invalid_headers)
    end
    conf.valid[key] = k
  end
  if k.disabled then
    ctx:annotate("consumer", k.id)
    return ctx:deny(403, "consumer_disabled",
      "the application this API key belongs to is disabled on this gateway")
  end
  if k.revoked then
    ctx:annotate("consumer", k.id)
    return ctx:deny(403, "api_key_revoked", "this API key has been revoked; ask for a new key")
  end
  if k.expires and time() >= k.expires then
    ctx:annotate("consumer", k.id)
    return ctx:deny(401, "expired_api_key", k.expired_message, conf.invalid_headers)
  end

  remove_key_headers(req, conf.lookup)
  ctx.consumer = k.consumer
  ctx:decision("allow", k.reason)
end

return key_auth
