-- catalog.lua — only approved models leave the gateway, and only to those
-- allowed to use them.
--
-- The catalog itself is the policy's `models:` section (public names and
-- aliases → ordered targets, with deprecation and sunset dates and a
-- replacement); the front door refuses any model outside it with 404. This
-- plugin enforces the rest of the model's lifecycle and who may use it:
--   * a consumer with an allowlist (`models` on the consumer, set by the
--     auth plugin from policy or from a token's claims) may call only those
--     models ("*" allows all), or one a live policy exception grants it:
--     403 model_not_allowed;
--   * a model past its sunset is refused with 410 model_sunset, naming the
--     replacement;
--   * a deprecated model is still served, with `Deprecation`, `Sunset` and
--     `x-sluice-warning` headers on the answer and a "warn" decision in the
--     audit record, so "who still calls deprecated models?" has an answer.
-- GET /v1/models lists the same: the caller's allowed models, less those
-- past their sunset (the front door builds that list from the same facts).
local catalog = { name = "catalog", priority = 800 }

catalog.schema = {}

-- RFC 9110 §5.6.7 IMF-fixdate, as the Sunset header (RFC 8594) wants.
local function http_date(epoch)
  return os.date("!%a, %d %b %Y %H:%M:%S GMT", epoch)
end

local function allowed(consumer, name)
  local list = type(consumer) == "table" and consumer.models
  if type(list) ~= "table" then return true end -- no allowlist: the whole catalog
  for _, m in ipairs(list) do
    if m == name or m == "*" then return true end
  end
  return false
end

function catalog.access(ctx)
  local m = ctx.model
  if not m or not m.name then return end -- not an AI call, or unknown: the front door answers
  local consumer = ctx.consumer
  if not allowed(consumer, m.name) then
    local id = ctx:grant("models", m.name)
    if id then
      ctx:decision("allow", ("model '%s' allowed by exception %s"):format(m.name, id))
    else
    local who = type(consumer) == "table" and (consumer.app or consumer.id) or "this caller"
      return ctx:deny(403, "model_not_allowed",
        ("the model '%s' is not approved for %s"):format(m.requested, who))
    end
  end
  local now = sluice.time.now()
  local use = m.replacement and ("; use '" .. m.replacement .. "'") or ""
  if m.sunset_at and now >= m.sunset_at then
    return ctx:deny(410, "model_sunset",
      ("the model '%s' was retired on %s%s"):format(m.requested, m.sunset, use))
  end
  if m.deprecated_at and now >= m.deprecated_at then
    -- RFC 9745: Deprecation is "@" and the epoch second it took effect
    ctx:set_response_header("deprecation", "@" .. math.floor(m.deprecated_at))
    local until_ = ""
    if m.sunset_at then
      ctx:set_response_header("sunset", http_date(m.sunset_at))
      until_ = " and will be retired on " .. m.sunset
    end
    local msg = ("the model '%s' is deprecated%s%s"):format(m.requested, until_, use)
    ctx:set_response_header("x-sluice-warning", msg)
    ctx:decision("warn", msg)
  end
end

return catalog
