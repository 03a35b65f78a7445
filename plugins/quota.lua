-- quota.lua — each consumer, team or application stays within its limits:
-- requests and tokens per minute, tokens per day, and a monthly cost budget.
--
-- A limit counts per value of one identity field of ctx.consumer (`team`,
-- `app`, `id`, or a JWT claim such as `claims.sub`), so a new team is
-- limited the moment it appears, without being declared here. Counters live
-- in sluice.shared, so every worker counts against the same numbers; with a
-- `cluster:` section in sluice.yaml they live in its cluster scope, so every
-- instance does too (docs/scale-out.md: each instance batches its counts to
-- Redis and may overshoot a limit by a bounded amount). While Redis is down
-- a limit counts locally (`cluster_fail: open`) or refuses with 503
-- (`cluster_fail: closed`).
--
-- Windows are fixed and aligned to UTC: the minute, the hour, the day, the
-- calendar month, or any duration (`period: 2s`) counted from the epoch. A
-- refused request is told when its window ends (Retry-After).
--
-- Tokens and cost are reserved when the request arrives — its prompt
-- estimated at ~4 bytes a token plus max_tokens (or
-- default_completion_tokens) — and settled when it is over, with the usage
-- the provider reported (or, for a stream cut short, what was streamed).
-- A reservation that does not fit is taken back and the request refused,
-- so concurrent requests never spend past a hard limit by more than what
-- they used beyond their own estimates. A limit of N allows exactly N.
-- A stream that runs past its reservation is charged as it streams and,
-- once a hard token or cost limit is crossed, ends with a clean error
-- event instead of being charged only after it ends.
--
-- Soft limits never refuse: crossing one records a "warn" decision and
-- answers with an x-sluice-quota-warning header.
local quota = { name = "quota", priority = 600 }

local shared, now_s, json = sluice.shared, sluice.time.now, sluice.json
local sha256 = sluice.hash.sha256
local floor, ceil, max = math.floor, math.ceil, math.max
local find, sub, format, match = string.find, string.sub, string.format, string.match
local type, tostring, pairs, ipairs = type, tostring, pairs, ipairs

local FIXED = { minute = 60, hour = 3600, day = 86400, month = true }
local UNIT_MS = { ms = 1, s = 1000, m = 60000, h = 3600000, d = 86400000 }
-- Keys outlive their window by this much, so a request that started in a
-- window is settled in that window's counter.
local SLACK = 300

local function duration_ms(s)
  local n, unit = match(s, "^(%d+%.?%d*)%s*(%a+)$")
  local mult = n and UNIT_MS[unit]
  return mult and tonumber(n) * mult or nil
end

local function valid_period(v)
  if FIXED[v] then return true end
  local ms = duration_ms(v)
  if ms and ms >= 1000 and ms % 1000 == 0 then return true end
  return false, "expected minute, hour, day, month or a whole number of seconds like 30s, 5m, 2h"
end

quota.schema = {
  limits = { type = "array", required = true, elements = { type = "record", fields = {
    by       = { type = "string", required = true },       -- a field of ctx.consumer
    requests = { type = "integer", min = 0 },              -- requests per period
    tokens   = { type = "integer", min = 0 },              -- prompt + completion tokens
    cost     = { type = "number", min = 0 },               -- US dollars
    period   = { type = "string", check = valid_period },  -- default minute; month for cost
    soft     = { type = "boolean", default = false },      -- warn, never refuse
    models   = { type = "array", elements = { type = "string" } }, -- only these (public names)
    overrides = { type = "map", values = { type = "number", min = 0 } }, -- per identity value
    name     = { type = "string" },  -- what a policy exception names to raise this limit
    -- cluster mode (docs/scale-out.md): while Redis is down, count locally or refuse
    cluster_fail  = { type = "string", one_of = { "open", "closed" } }, -- default: cluster.fail
    cluster_share = { type = "integer", min = 1 }, -- requests one instance may hold unflushed
  } } },
  -- public model name (or "*" for any other) → US dollars per 1M tokens
  prices = { type = "map", default = {}, values = { type = "record", fields = {
    input  = { type = "number", required = true, min = 0 },
    output = { type = "number", required = true, min = 0 },
  } } },
  default_completion_tokens = { type = "integer", min = 0, default = 256 },
  cut_streams = { type = "boolean", default = true },
}

-- ---- init: each limit compiled once ---------------------------------------

local METRICS = { "requests", "tokens", "cost" }
local PERIOD_WORDS = { minute = "minute", hour = "hour", day = "day", month = "month" }

local function micro(dollars) return floor(dollars * 1e6 + 0.5) end

function quota.init(conf)
  local seen = {}
  for i, l in ipairs(conf.limits) do
    local where = "limits[" .. i .. "]: "
    for _, m in ipairs(METRICS) do
      if l[m] ~= nil then
        if l.metric then error(where .. "set one of requests, tokens or cost, not several", 0) end
        l.metric = m
      end
    end
    if not l.metric then error(where .. "set one of requests, tokens or cost", 0) end
    if l.metric == "cost" and next(conf.prices) == nil then
      error(where .. "a cost limit needs prices", 0)
    end
    l.path = {}
    for part in l.by:gsub("^consumer%.", ""):gmatch("[^%.]+") do l.path[#l.path + 1] = part end
    if #l.path == 0 then error(where .. "by: name a field of the consumer, like team", 0) end
    l.noun = l.path[#l.path] == "id" and "consumer" or l.path[#l.path]
    l.period = l.period or (l.metric == "cost" and "month" or "minute")
    l.fixed = FIXED[l.period]
    if not l.fixed then l.len_ms = duration_ms(l.period) end
    -- limits are held in the counter's unit: cost in micro-dollars
    local unit = l.metric == "cost" and micro or function(n) return floor(n) end
    l.max = unit(l[l.metric])
    l.unit = unit
    if l.overrides then
      for who, v in pairs(l.overrides) do l.overrides[who] = unit(v) end
    end
    if l.models then
      local set = {}
      for _, m in ipairs(l.models) do set[m] = true end
      l.models = set
    end
    l.per = PERIOD_WORDS[l.period] or l.period
    -- the counter's name: stable across reloads, distinct per limit
    local prefix = l.metric .. ":" .. l.period .. ":" .. l.by .. (l.soft and ":soft" or "")
    if seen[prefix] then prefix = prefix .. ":" .. i end
    seen[prefix] = true
    l.prefix = prefix
    -- admission may be refused when the cluster cannot vouch for the count;
    -- what was already used (streamed, settled, given back) always counts
    l.scope = { scope = "cluster", fail = l.cluster_fail, share = l.cluster_share }
    l.settle = { scope = "cluster", fail = "open", share = 1e15 }
  end
  conf.holds_tokens = false
  for _, l in ipairs(conf.limits) do
    if l.metric ~= "requests" then conf.holds_tokens = true end
  end
end

-- ---- windows ----------------------------------------------------------------

-- Days since 1970-01-01 of a civil UTC date (Howard Hinnant's algorithm).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local doy = floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy - 719468
end

-- The window `now` falls in: its id (part of the key) and when it ends.
local function window(l, now)
  if l.fixed == true then
    local t = os.date("!*t", floor(now))
    local y, m = t.year, t.month + 1
    if m > 12 then y, m = y + 1, 1 end
    return format("%04d%02d", t.year, t.month), days_from_civil(y, m, 1) * 86400
  elseif l.fixed then
    local id = floor(now / l.fixed)
    return tostring(id), (id + 1) * l.fixed
  end
  local id = floor(now * 1000 / l.len_ms)
  return tostring(id), (id + 1) * l.len_ms / 1000
end

-- "45s", "3m20s", "2h0m5s": how OpenAI writes x-ratelimit-reset-*.
local function reset_text(secs)
  secs = max(1, ceil(secs))
  if secs < 60 then return secs .. "s" end
  if secs < 3600 then return format("%dm%ds", floor(secs / 60), secs % 60) end
  return format("%dh%dm%ds", floor(secs / 3600), floor(secs % 3600 / 60), secs % 60)
end

-- ---- what a request is, and what it costs -------------------------------------

local function identity(consumer, path)
  if type(consumer) ~= "table" then
    if path[1] == "id" and path[2] == nil and type(consumer) == "string" then return consumer end
    return nil
  end
  local v = consumer
  for _, p in ipairs(path) do
    if type(v) ~= "table" then return nil end
    v = v[p]
  end
  local tv = type(v)
  if tv == "number" then return tostring(v) end
  if tv ~= "string" or v == "" then return nil end
  return v
end

-- The identity as it goes into a key: short and without separators, or hashed.
local function key_part(who)
  if #who <= 96 and not find(who, "[^%w%-_.@+]") then return who end
  return "h" .. sub(sha256(who), 1, 32)
end

local function text_bytes(v)
  if type(v) == "string" then return #v end
  if type(v) ~= "table" then return 0 end
  local n = 0
  for _, part in ipairs(v) do
    if type(part) == "string" then
      n = n + #part
    elseif type(part) == "table" and type(part.text) == "string" then
      n = n + #part.text
    end
  end
  return n
end

-- Prompt and completion tokens to reserve, from the request body.
local function estimate(ctx, conf)
  local body = ctx.request:json()
  if type(body) ~= "table" then return ceil(#ctx.request:body() / 4), 0 end
  local bytes = 0
  if type(body.messages) == "table" then
    for _, m in ipairs(body.messages) do
      if type(m) == "table" then bytes = bytes + text_bytes(m.content) end
    end
    bytes = bytes + text_bytes(body.system)
  elseif body.input ~= nil then
    bytes = text_bytes(body.input)
    return ceil(bytes / 4), 0 -- embeddings have no completion
  else
    bytes = #ctx.request:body()
  end
  local out = body.max_completion_tokens or body.max_tokens
  if type(out) ~= "number" or out < 0 then out = conf.default_completion_tokens end
  return ceil(bytes / 4), floor(out)
end

local function model_of(ctx)
  local m = ctx.model
  if m then return m.name or m.requested, m.stream end
  local body = ctx.request:json()
  if type(body) == "table" then
    return type(body.model) == "string" and body.model or nil, body.stream == true
  end
end

-- The amount a limit counts for these tokens: tokens, or micro-dollars.
local function amount(l, price, prompt, completion)
  if l.metric == "tokens" then return prompt + completion end
  if not price then return 0 end
  -- $/1M tokens × tokens = micro-dollars; round up, never undercharge
  return max(0, ceil(prompt * price.input + completion * price.output - 1e-6))
end

local function describe(l, limit)
  local what
  if l.metric == "requests" then
    what = limit .. (limit == 1 and " request" or " requests")
  elseif l.metric == "tokens" then
    what = limit .. (limit == 1 and " token" or " tokens")
  else
    what = format("a budget of $%.2f", limit / 1e6)
  end
  return format("%s per %s for each %s", what, l.per, l.noun)
end

-- ---- access: count, reserve, refuse -------------------------------------------

local CODES = { requests = "requests_limit_exceeded", tokens = "tokens_limit_exceeded",
                cost = "cost_budget_exceeded" }

local function ratelimit_headers(holds, denied, out)
  local best = {}
  for _, h in ipairs(holds) do
    local l = h.limit
    if not l.soft and l.metric ~= "cost" then
      local b = best[l.metric]
      if h == denied or not b or (b ~= denied and h.remaining < b.remaining) then
        best[l.metric] = h
      end
    end
  end
  for metric, h in pairs(best) do
    out["x-ratelimit-limit-" .. metric] = tostring(h.max)
    out["x-ratelimit-remaining-" .. metric] = tostring(h.remaining)
    out["x-ratelimit-reset-" .. metric] = reset_text(h.reset)
  end
  return out
end

-- Undo this request's counts: it is refused.
local function take_back(holds)
  for _, h in ipairs(holds) do
    if h.amount ~= 0 then shared.incr(h.key, -h.amount, 0, h.ttl, h.limit.settle) end
    h.remaining = max(0, h.max - (h.total - h.amount))
  end
end

-- The cluster could not count this request (docs/scale-out.md): the
-- instance's share of the limit is in flight to Redis, or Redis is down and
-- the limit fails closed. Nothing was counted for this limit.
local function cluster_refusal(ctx, holds, l, limit, err)
  take_back(holds)
  ctx:annotate("quota_cluster", err)
  if err == "cluster share in use" then
    return ctx:deny(429, CODES[l.metric], format("quota: %s is being counted across gateway " ..
      "instances and this instance's share is in use; retry in a second", describe(l, limit)),
      { ["retry-after"] = "1" })
  end
  return ctx:deny(503, "quota_unavailable", format("quota: %s cannot be checked right now " ..
    "(the shared counter store is unreachable); retry later", describe(l, limit)),
    { ["retry-after"] = "5" })
end

function quota.access(ctx, conf)
  local consumer = ctx.consumer
  local now = now_s()
  local model, stream = model_of(ctx)
  local price = model and (conf.prices[model] or conf.prices["*"])
  local prompt, completion
  if conf.holds_tokens then prompt, completion = estimate(ctx, conf) end
  local holds, warned, unpriced = {}, nil, false
  for _, l in ipairs(conf.limits) do
    local who = (not l.models or l.models[model]) and identity(consumer, l.path)
    if who then
      local wid, ends = window(l, now)
      local limit = l.overrides and l.overrides[who] or l.max
      local n = 1
      if l.metric ~= "requests" then
        n = amount(l, price, prompt, completion)
        if l.metric == "cost" and not price then unpriced = true end
      end
      local h = { limit = l, key = l.prefix .. ":" .. key_part(who) .. ":" .. wid,
                  amount = n, max = limit, ttl = ceil(ends - now) + SLACK, reset = ends - now }
      local total, err = shared.incr(h.key, n, 0, h.ttl, l.scope)
      if not total then
        if err ~= "cluster share in use" and err ~= "cluster unavailable" then
          take_back(holds) -- what this request already counted
          error("quota counter: " .. tostring(err), 0)
        end
        -- a soft limit the cluster cannot count now warns nobody
        if not l.soft then return cluster_refusal(ctx, holds, l, limit, err) end
      else
        holds[#holds + 1] = h
        if total > limit and l.name then
          -- over it: a live policy exception may raise it for this consumer
          -- (asked only now, so the record names exceptions that helped)
          local id, raised = ctx:grant("quota", l.name)
          if id and type(raised) == "number" and raised >= 0 then
            limit = l.unit(raised)
            h.max = limit
          end
        end
        h.total, h.remaining = total, max(0, limit - total)
        if total > limit then
          if l.soft then
            warned = warned or h
            ctx:decision("warn", "over the soft limit of " .. describe(l, limit))
          else
            take_back(holds)
            local retry = max(1, ceil(ends - now))
            local msg
            if n > limit then
              msg = format("this request alone (about %s) is larger than the limit of %s",
                           l.metric == "cost" and format("$%.4f", n / 1e6) or n .. " tokens",
                           describe(l, limit))
            else
              msg = format("quota exceeded: %s; retry after %ds", describe(l, limit), retry)
            end
            ctx:annotate("quota_exceeded", l.prefix)
            local headers = ratelimit_headers(holds, h, { ["retry-after"] = tostring(retry) })
            return ctx:deny(429, CODES[l.metric], msg, headers)
          end
        end
      end
    end
  end
  if #holds == 0 then return end
  if unpriced then
    ctx:decision("flag", "model '" .. tostring(model or "unknown") ..
                 "' has no price: cost budgets do not count it")
  end
  for k, v in pairs(ratelimit_headers(holds, nil, {})) do ctx:set_response_header(k, v) end
  if warned then
    ctx:set_response_header("x-sluice-quota-warning",
                            "over the soft limit of " .. describe(warned.limit, warned.max))
  end
  local v = ctx.vars
  v.holds, v.price, v.prompt, v.stream = holds, price, prompt or 0, stream
  v.streamed = 0
end

-- ---- body_filter: charge a stream as it goes, cut it at a hard limit ----------

-- Generated text in a delta: OpenAI (content, reasoning, refusal) and
-- Anthropic (text, partial_json, thinking).
local DELTA_TEXT = { "content", "reasoning_content", "refusal", "text", "partial_json", "thinking" }

local function delta_bytes(d)
  if type(d) ~= "table" then return 0 end
  local n = 0
  for _, k in ipairs(DELTA_TEXT) do
    if type(d[k]) == "string" then n = n + #d[k] end
  end
  if type(d.tool_calls) == "table" then
    for _, tc in ipairs(d.tool_calls) do
      if type(tc) == "table" and type(tc["function"]) == "table" then
        n = n + text_bytes(tc["function"].arguments)
      end
    end
  end
  return n
end

-- Bytes of generated text in one piece of an SSE stream (one or several
-- events): OpenAI chunks (choices[].delta) and Anthropic deltas.
local function streamed_bytes(data)
  local n, pos = 0, 1
  while true do
    local s = find(data, "data: ", pos, true)
    if not s then return n end
    local e = find(data, "\n", s, true) or #data + 1
    pos = e
    local payload = sub(data, s + 6, e - 1)
    if find(payload, '"delta"', 1, true) then
      local ev = json.decode(payload)
      if type(ev) == "table" then
        if type(ev.choices) == "table" then
          for _, c in ipairs(ev.choices) do
            if type(c) == "table" then n = n + delta_bytes(c.delta) end
          end
        end
        n = n + delta_bytes(ev.delta)
      end
    end
  end
end

local function cut_event(ctx, l, limit)
  local code = l.metric == "cost" and "cost_budget_exceeded" or "token_budget_exceeded"
  local msg = "the answer was cut: this request used up the " ..
    (l.metric == "cost" and "cost budget" or "token budget") .. " of " .. describe(l, limit)
  if ctx.request.path == "/v1/messages" then
    return "event: error\ndata: " .. json.encode({ type = "error",
      error = { type = "rate_limit_error", message = msg } }) .. "\n\n"
  end
  local err = { error = { message = msg, type = "rate_limit_error", code = code } }
  return "data: " .. json.encode(err) .. "\n\ndata: [DONE]\n\n"
end

function quota.body_filter(ctx, conf, data, last)
  local v = ctx.vars
  if not v.holds or not v.stream or not conf.holds_tokens then return nil end
  local ct = ctx.response and ctx.response.headers["content-type"] or ""
  if not find(ct, "text/event-stream", 1, true) then return nil end
  local b = streamed_bytes(data)
  if b > 0 then
    v.streamed = v.streamed + b
    local completion = ceil(v.streamed / 4)
    for _, h in ipairs(v.holds) do
      local l = h.limit
      if l.metric ~= "requests" then
        local want = amount(l, v.price, v.prompt, completion)
        if want > h.amount then
          local total = shared.incr(h.key, want - h.amount, 0, h.ttl, l.settle)
          h.amount = want
          if total and total > h.max and not l.soft and conf.cut_streams and not v.cut then
            v.cut = true
            ctx:decision("modify", "stream cut at the hard limit of " .. describe(l, h.max))
            ctx:annotate("quota_stream_cut", l.prefix)
            ctx:end_stream() -- the backend's rest is not read, nor paid for further
            return cut_event(ctx, l, h.max)
          end
        end
      end
    end
  end
  if v.cut then return "" end
  return nil
end

-- ---- log: settle with what was used -------------------------------------------

-- Prompt and completion tokens this request used, and where the numbers came from.
-- Whether a backend may have received (and may bill) the prompt though no
-- answer came: the client left while an attempt was out, or the attempt
-- timed out or was reset after it was sent. A refused connection sent
-- nothing; an error answer is not billed.
local function prompt_sent(record)
  for _, a in ipairs(type(record) == "table" and record.attempts or {}) do
    if a.outcome == "aborted" or (a.status == 0 and (a.error == "timeout" or a.error == "reset")) then
      return true
    end
  end
  return false
end

local function used(ctx, v, record)
  local u = ctx.usage
  if type(u) == "table" and type(u.prompt_tokens) == "number" then
    local c = type(u.completion_tokens) == "number" and u.completion_tokens or 0
    return u.prompt_tokens, c, u.source or "reported"
  end
  local r = ctx.response
  -- status 0: the last attempt failed before any answer (fallback saw it)
  if not r or r.status == 0 or r.status >= 400 then
    if prompt_sent(record) then return v.prompt, 0, "prompt sent, no answer" end
    return 0, 0, "no answer"
  end
  if v.streamed > 0 then return v.prompt, ceil(v.streamed / 4), "streamed" end
  -- an answer without usage: keep the reservation
  return nil
end

function quota.log(ctx, conf, record)
  local v = ctx.vars
  local holds = v.holds
  if not holds or not conf.holds_tokens then return end
  local prompt, completion, source = used(ctx, v, record)
  if prompt then
    for _, h in ipairs(holds) do
      local l = h.limit
      if l.metric ~= "requests" then
        local final = amount(l, v.price, prompt, completion)
        if final ~= h.amount then
          shared.incr(h.key, final - h.amount, 0, h.ttl, l.settle)
          h.amount = final
        end
      end
    end
    ctx:annotate("quota_tokens", { prompt = prompt, completion = completion, source = source })
    if v.price then
      ctx:annotate("cost_usd", (prompt * v.price.input + completion * v.price.output) / 1e6)
    end
  end
end

return quota
