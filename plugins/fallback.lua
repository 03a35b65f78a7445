-- fallback.lua — when a provider degrades, the request goes elsewhere, and
-- a provider that keeps failing is left alone for a while.
--
-- The model's targets (the catalog's, as earlier plugins left them) are
-- tried in order: grouped by tier, weighted at random within a tier. The
-- gateway moves on to the next target when an attempt fails before
-- anything reached the client:
--   * the backend answers one of `retry_on` (429 and 5xx by default);
--   * the attempt fails: connect error, timeout, reset (`retry_on_errors`);
--   * the backend answers a context-length error (a 400 whose body says so)
--     and `context_fallback` names a larger model for this one.
-- Never after the first byte reached the client: a stream that breaks
-- mid-way ends with an error event, not a second answer glued on.
-- Limits: `max_attempts`; `attempt_timeout` (each attempt's time to its
-- response head) and `total_timeout` (no new attempt after it) are enforced
-- by the gateway itself, which reads them from this configuration.
--
-- Across requests and workers (sluice.shared):
--   * a 429/503 with Retry-After cools that backend down for that long:
--     other requests skip it;
--   * a circuit breaker per backend: `consecutive_failures` in a row, or a
--     `failure_ratio` over a `window` with at least `min_requests`, open it
--     for `cool_down`; then one request may probe it (half-open): success
--     closes it, failure opens it again;
--   * `drain: [backend…]` takes a backend out at once (publish the policy).
-- With a `cluster:` section in sluice.yaml, a breaker's open and half-open
-- state and a Retry-After cool-down reach every instance (they are written
-- in the cluster scope of sluice.shared), so a backend one instance opened
-- is skipped by all of them within milliseconds; failure counts and the
-- half-open probe stay per instance (each may send one probe).
-- A request whose every target is unavailable is refused with 503 and a
-- Retry-After. Every fall-back, skip and breaker change is a decision in the
-- audit record; the gateway records every attempt (backend, status, error,
-- latency) there too.
local fallback = { name = "fallback", priority = 200 }

fallback.schema = {
  retry_on = { type = "array", elements = { type = "integer", min = 400, max = 599 },
               default = { 429, 500, 502, 503, 504 } },
  retry_on_errors = { type = "array", default = { "connect_error", "timeout", "reset" },
    elements = { type = "string",
                 one_of = { "connect_error", "timeout", "reset", "tls", "dns", "protocol" } } },
  max_attempts = { type = "integer", min = 1, max = 8, default = 3 },
  attempt_timeout = { type = "duration", min = 1 },
  total_timeout = { type = "duration", min = 1 },
  retry_after = { type = "boolean", default = true },
  max_cool_down = { type = "duration", min = 1000, default = 300000 },
  tiers = { type = "map", values = { type = "integer", min = 0 } },
  weights = { type = "map", values = { type = "number", min = 0 } },
  breaker = { type = "record", default = {}, fields = {
    enabled = { type = "boolean", default = true },
    consecutive_failures = { type = "integer", min = 1, default = 5 },
    failure_ratio = { type = "number", min = 0.01, max = 1 },
    window = { type = "duration", min = 1000, default = 60000 },
    min_requests = { type = "integer", min = 1, default = 20 },
    cool_down = { type = "duration", min = 100, default = 30000 },
  } },
  drain = { type = "array", elements = { type = "string" }, default = {} },
  context_fallback = { type = "map", values = { type = "record", fields = {
    backend = { type = "string", required = true },
    model = { type = "string" },
  } } },
}

local shared = sluice.shared
local CLUSTER = { scope = "cluster" } -- every instance sees these keys
local floor, ceil, huge, random = math.floor, math.ceil, math.huge, math.random
local sort, remove = table.sort, table.remove

local function set_of(list)
  local s = {}
  for _, v in ipairs(list or {}) do s[v] = true end
  return s
end

function fallback.init(conf)
  conf.retry_status = set_of(conf.retry_on)
  conf.retry_error = set_of(conf.retry_on_errors)
  conf.drained = set_of(conf.drain)
  conf.weights = conf.weights or {}
  conf.context_fallback = conf.context_fallback or {}
  conf.cool_s = conf.breaker.cool_down / 1000
  conf.window_s = conf.breaker.window / 1000
end

-- ---- shared state, per backend ------------------------------------------
-- open:B     the breaker is open (TTL: the cool-down)
-- tripped:B  it opened and has not closed since (half-open once open:B is gone)
-- probe:B    the half-open probe's lock (incr: the first caller gets 1)
-- fails:B    consecutive failures
-- req:B:W / fail:B:W  results in ratio window W
-- cool:B     a Retry-After cool-down (TTL: what the backend asked for)

local function left_s(key)
  local t = shared.ttl(key)
  return t and t > 0 and t or nil
end

-- Why backend `be` may not take this request now, or nil.
local function unavailable(conf, be, probes)
  if conf.drained[be] then return "drained by policy" end
  if shared.get("open:" .. be) then return "circuit breaker open", left_s("open:" .. be) end
  local cool = left_s("cool:" .. be)
  if shared.get("cool:" .. be) then
    return ("cooling down after the backend asked to retry later (%ds left)"):format(ceil(cool or 0)), cool
  end
  if shared.get("tripped:" .. be) then
    if shared.incr("probe:" .. be, 1, 0, conf.cool_s) == 1 then
      probes[be] = true -- this request probes the half-open breaker
      return nil
    end
    return "circuit breaker half-open, a probe is in flight", conf.cool_s
  end
  return nil
end

local function open_breaker(ctx, conf, be, why)
  shared.set("open:" .. be, true, conf.cool_s, CLUSTER)
  shared.set("tripped:" .. be, true, 86400, CLUSTER)
  shared.delete("probe:" .. be)
  shared.set("fails:" .. be, 0)
  local msg = ("circuit breaker for '%s' opened for %gs: %s"):format(be, conf.cool_s, why)
  sluice.metrics.breaker(be, "open", conf.cool_s)
  sluice.log.warn(msg)
  ctx:decision("flag", msg)
end

-- Count one result of backend `be` toward its breaker.
local function record_result(ctx, conf, be, failed)
  local b = conf.breaker
  if not b.enabled then return end
  local tripped = shared.get("tripped:" .. be)
  -- Only the half-open probe decides a tripped breaker: a request sent
  -- before it opened and answered after its cool-down says nothing new.
  local probe = ctx.vars.probes and ctx.vars.probes[be] == "tried"
  if not failed then
    shared.set("fails:" .. be, 0)
    if tripped and probe and not shared.get("open:" .. be) then
      shared.delete("tripped:" .. be, CLUSTER)
      shared.delete("probe:" .. be)
      local msg = ("circuit breaker for '%s' closed: the probe succeeded"):format(be)
      sluice.metrics.breaker(be, "closed")
      sluice.log.info(msg)
      ctx:decision("allow", msg)
    end
  end
  local ratio_open
  if b.failure_ratio then
    local w = floor(sluice.time.now() / conf.window_s)
    local reqs = shared.incr(("req:%s:%d"):format(be, w), 1, 0, conf.window_s * 2) or 0
    local fails = failed and shared.incr(("fail:%s:%d"):format(be, w), 1, 0, conf.window_s * 2)
      or shared.get(("fail:%s:%d"):format(be, w)) or 0
    if failed and reqs >= b.min_requests and fails / reqs >= b.failure_ratio then
      ratio_open = ("%d of the last %d requests failed"):format(fails, reqs)
    end
  end
  if not failed then return end
  if tripped then
    if probe and not shared.get("open:" .. be) then open_breaker(ctx, conf, be, "the half-open probe failed") end
    return
  end
  local n = shared.incr("fails:" .. be, 1, 0) or 0
  if n >= b.consecutive_failures then
    open_breaker(ctx, conf, be, ("%d consecutive failures"):format(n))
  elseif ratio_open then
    open_breaker(ctx, conf, be, ratio_open)
  end
end

-- ---- ordering -------------------------------------------------------------

-- Targets by tier (the `tiers` map; a target it does not name comes after
-- those it does, in catalog order; without the map, catalog order), and
-- in weighted random order within a tier.
local function ordered(conf, targets)
  local groups, keys = {}, {}
  for i, t in ipairs(targets) do
    local tier
    if conf.tiers then tier = conf.tiers[t.backend] or (1e9 + i) else tier = i end
    local g = groups[tier]
    if not g then g = {}; groups[tier] = g; keys[#keys + 1] = tier end
    g[#g + 1] = t
  end
  sort(keys)
  local out = {}
  for _, k in ipairs(keys) do
    local pool = groups[k]
    while #pool > 0 do
      local total, pick = 0, 1
      for _, t in ipairs(pool) do total = total + (conf.weights[t.backend] or 1) end
      if total > 0 and #pool > 1 then
        local r = random() * total
        for i, t in ipairs(pool) do
          r = r - (conf.weights[t.backend] or 1)
          if r < 0 then pick = i; break end
        end
      end
      out[#out + 1] = remove(pool, pick)
    end
  end
  return out
end

-- ---- phases -----------------------------------------------------------------

function fallback.route(ctx, conf)
  local route = ctx.route
  local targets = route and route.targets
  if type(targets) ~= "table" or #targets == 0 then return nil end
  local probes, list, soonest = {}, {}, nil
  for _, t in ipairs(ordered(conf, targets)) do
    local why, retry_in = unavailable(conf, t.backend, probes)
    if why then
      ctx:decision("modify", ("skipped '%s': %s"):format(t.backend, why))
      if retry_in and (not soonest or retry_in < soonest) then soonest = retry_in end
    elseif #list < conf.max_attempts then
      list[#list + 1] = { backend = t.backend, model = t.model }
    elseif probes[t.backend] then
      shared.delete("probe:" .. t.backend) -- never tried: leave the probe to another request
      probes[t.backend] = nil
    end
  end
  ctx.vars.probes = probes
  ctx.vars.order = list
  if #list == 0 then
    return ctx:deny(503, "no_backend_available",
      "every backend that may serve this request is unavailable right now (drained, " ..
      "circuit breaker open or cooling down); retry later",
      { ["retry-after"] = tostring(ceil(soonest or conf.cool_s)) })
  end
  return list
end

-- A provider's "the prompt is longer than this model takes", as OpenAI
-- (and Azure, vLLM) code it, or as Anthropic and Gemini word it.
local function context_length_error(body)
  if type(body) ~= "string" or body == "" then return false end
  local doc = sluice.json.decode(body)
  if type(doc) == "table" and doc.error == nil and type(doc[1]) == "table" then doc = doc[1] end
  local e = type(doc) == "table" and doc.error
  if type(e) ~= "table" then return false end
  if e.code == "context_length_exceeded" then return true end
  local msg = type(e.message) == "string" and e.message:lower() or ""
  return msg:find("prompt is too long", 1, true) ~= nil
    or msg:find("context length", 1, true) ~= nil
    or msg:find("context window", 1, true) ~= nil
    or (msg:find("exceeds the maximum", 1, true) ~= nil and msg:find("token", 1, true) ~= nil)
end

-- Retry-After in seconds (RFC 9110 §10.2.3: delay-seconds; an HTTP-date is
-- not read), or retry-after-ms.
local function retry_after_s(headers)
  local ms = tonumber(headers["retry-after-ms"] or "")
  if ms and ms > 0 then return ms / 1000 end
  local s = tonumber(headers["retry-after"] or "")
  if s and s > 0 then return s end
  return nil
end

local function where(t)
  if not t then return "nothing" end
  return t.model and ("'%s' (%s)"):format(t.backend, t.model) or ("'%s'"):format(t.backend)
end

function fallback.upstream_response(ctx, conf, attempt)
  local be, status, n = attempt.backend, attempt.status, attempt.number
  local order = ctx.vars.order or {}
  local why, failed
  if status == 0 then
    failed = true
    if conf.retry_error[attempt.error] then why = attempt.error end
  else
    failed = status >= 500
    if conf.retry_status[status] then why = tostring(status) end
    local ra = (status == 429 or status == 503) and conf.retry_after and retry_after_s(attempt.headers)
    if ra then
      local s = math.min(ra, conf.max_cool_down / 1000)
      shared.set("cool:" .. be, true, s, CLUSTER)
      ctx:annotate("cooled_down", { backend = be, seconds = s })
    end
  end
  if ctx.vars.probes and ctx.vars.probes[be] then ctx.vars.probes[be] = "tried" end
  record_result(ctx, conf, be, failed)
  if n >= conf.max_attempts then return nil end
  -- a context-length error: once, to the larger model named for this one
  local model = ctx.model and ctx.model.name
  local bigger = model and conf.context_fallback[model]
  if not why and bigger and (status == 400 or status == 413) and not ctx.vars.context_moved
    and context_length_error(attempt.body) then
    ctx.vars.context_moved = true
    local target = { backend = bigger.backend, model = bigger.model }
    ctx:set_targets({ target })
    if #ctx.route.targets == 0 then -- cut by the request's confinement
      ctx:decision("flag", ("no context fallback to %s: outside this request's data boundary")
        :format(where(target)))
      return nil
    end
    ctx.vars.order = { [n + 1] = target }
    ctx:decision("modify", ("fell back from %s to %s: context length exceeded")
      :format(where(order[n] or { backend = be }), where(target)))
    return "next"
  end
  if not why or not attempt.more then return nil end
  ctx:decision("modify", ("fell back from '%s' to %s: %s"):format(be, where(order[n + 1]), why))
  return "next"
end

-- A half-open probe this request took but never used goes back.
function fallback.log(ctx)
  for be, state in pairs(ctx.vars.probes or {}) do
    if state == true then shared.delete("probe:" .. be) end
  end
end

return fallback
