-- request-limits.lua — every request stays inside the size the organisation
-- agreed to pay for and carries what the audit trail needs.
--
-- Per request, in this order:
--   1. required headers (e.g. x-owning-team) must be present and non-empty:
--      else 400 missing_header naming the header;
--   2. the body may not exceed max_body_bytes: else 413 request_too_large;
--   3. a chat request may carry at most max_messages messages: else 400
--      too_many_messages;
--   4. the estimated prompt may not exceed max_prompt_tokens: else 413
--      prompt_too_long. The estimate is deliberately simple and the same
--      for every provider: ceil(characters of all text / 4) plus
--      MESSAGE_OVERHEAD tokens per message (see estimate_tokens below);
--   5. the completion cap: max_tokens / max_completion_tokens (OpenAI) or
--      max_tokens (Anthropic /v1/messages) above max_tokens is lowered to it
--      (mode clamp, a "modify" decision) or refused (mode reject, 400
--      max_tokens_too_large); when the client sent none, default_max_tokens
--      is set if configured;
--   6. client headers that must not travel upstream (cookies, internal
--      auth headers; strip_headers, "prefix-*" matches a prefix) are removed.
--
-- Limits come from `global`, overridden field by field by `teams[team]`
-- and then by `consumers[id]` for the consumer an auth plugin identified
-- (ctx.consumer.team, ctx.consumer.id); a live policy exception granting
-- the consumer a limit is asked for only when that limit would refuse or
-- lower something (see over() below). Denials name the limit, never the
-- content.
local limits = { name = "request-limits", priority = 850 }

-- Tokens added per message for its role and framing (OpenAI counts 3–4).
local MESSAGE_OVERHEAD = 4

local function header_name(v)
  if not v:match("^[%w!#$%%&'*+%-.^_`|~]+%*?$") then
    return false, "is not a header name (a trailing * matches a prefix)"
  end
  return true
end

local LIMITS = {
  max_body_bytes = { type = "integer", min = 1 },
  max_messages = { type = "integer", min = 1 },
  max_prompt_tokens = { type = "integer", min = 1 },
  max_tokens = { type = "integer", min = 1 },
  max_tokens_mode = { type = "string", one_of = { "clamp", "reject" } },
  default_max_tokens = { type = "integer", min = 1 },
  required_headers = { type = "array", elements = { type = "string", check = header_name } },
}

limits.schema = {
  global = { type = "record", fields = LIMITS, default = {} },
  teams = { type = "map", values = { type = "record", fields = LIMITS }, default = {} },
  consumers = { type = "map", values = { type = "record", fields = LIMITS }, default = {} },
  strip_headers = { type = "array", elements = { type = "string", check = header_name },
                    default = { "cookie", "x-internal-*" } },
}

local FIELDS = {}
for k in pairs(LIMITS) do FIELDS[#FIELDS + 1] = k end

local function lowered(list)
  if not list then return nil end
  local out = {}
  for i, h in ipairs(list) do out[i] = h:lower() end
  return out
end

local function check_scope(scope, where)
  if scope.default_max_tokens and scope.max_tokens and scope.default_max_tokens > scope.max_tokens then
    error(where .. ": default_max_tokens is above max_tokens", 0)
  end
  scope.required_headers = lowered(scope.required_headers)
end

function limits.init(conf)
  check_scope(conf.global, "global")
  for team, s in pairs(conf.teams) do check_scope(s, "teams." .. team) end
  for id, s in pairs(conf.consumers) do check_scope(s, "consumers." .. id) end
  conf.merged = {} -- effective(): limits by team layer, then consumer layer
  -- strip_headers: exact names, and prefixes from "x-internal-*"
  conf.strip_exact, conf.strip_prefixes = {}, {}
  for _, h in ipairs(conf.strip_headers) do
    h = h:lower()
    if h:sub(-1) == "*" then
      conf.strip_prefixes[#conf.strip_prefixes + 1] = h:sub(1, -2)
    else
      conf.strip_exact[h] = true
    end
  end
end

-- The limits for this request's consumer: global, then its team's, then
-- its own; and the scope that set them, for the audit record. Merged once
-- per pair of configured layers (a bounded set) and shared: read-only.
local NONE = {}
local function effective(conf, consumer)
  local team, own, tname, oname
  if type(consumer) == "table" then
    if consumer.team ~= nil then
      tname = "team:" .. tostring(consumer.team)
      team = conf.teams[tostring(consumer.team)]
    end
    if consumer.id ~= nil then
      own = conf.consumers[tostring(consumer.id)]
      if own then oname = "consumer:" .. tostring(consumer.id) end
    end
  end
  local by_team = conf.merged[team or NONE]
  if not by_team then by_team = {}; conf.merged[team or NONE] = by_team end
  local m = by_team[own or NONE]
  if not m then
    local eff, scope = {}, "global"
    for _, k in ipairs(FIELDS) do eff[k] = conf.global[k] end
    for _, layer in ipairs({ team and { team, tname } or false, own and { own, oname } or false }) do
      if layer then
        for _, k in ipairs(FIELDS) do
          if layer[1][k] ~= nil then eff[k] = layer[1][k] end
        end
        scope = layer[2]
      end
    end
    eff.max_tokens_mode = eff.max_tokens_mode or "clamp"
    m = { eff, scope }
    by_team[own or NONE] = m
  end
  return m[1], m[2]
end

-- ---- the token estimate ------------------------------------------------------

-- Characters, not bytes: UTF-8 continuation bytes do not start one. Most
-- prompts are ASCII: one regex search says so (a Lua pattern class costs
-- about 10 µs per KB), and only text with non-ASCII bytes is counted.
local re_find = sluice.re.find
local function chars(s)
  if #s == 0 or not re_find(s, "[\\x80-\\xbf]") then return #s end
  local _, cont = s:gsub("[\128-\191]", "")
  return #s - cont
end

-- Characters of the text in a content value: a string, or a list of parts
-- or blocks of which "text" parts count, with Anthropic tool_result blocks'
-- own content.
local function content_chars(c)
  if type(c) == "string" then return chars(c) end
  if type(c) ~= "table" then return 0 end
  local n = 0
  for _, p in ipairs(c) do
    if type(p) == "string" then
      n = n + chars(p)
    elseif type(p) == "table" then
      if type(p.text) == "string" then n = n + chars(p.text) end
      if p.type == "tool_result" then n = n + content_chars(p.content) end
    end
  end
  return n
end

-- Estimated prompt tokens of a chat body (OpenAI or Anthropic) or an
-- embeddings body: ceil(characters / 4) + MESSAGE_OVERHEAD per message.
-- Text counts from message content, assistant tool call arguments, the
-- Anthropic `system` field and embeddings `input`.
local function estimate_tokens(body, messages)
  local n = content_chars(body.system)
  local input = body.input
  if type(input) == "string" then
    n = n + chars(input)
  elseif type(input) == "table" then
    n = n + content_chars(input)
  end
  local count = 0
  if type(messages) == "table" then
    for _, m in ipairs(messages) do
      if type(m) == "table" then
        count = count + 1
        n = n + content_chars(m.content)
        if type(m.tool_calls) == "table" then
          for _, tc in ipairs(m.tool_calls) do
            local f = type(tc) == "table" and tc["function"]
            if type(f) == "table" and type(f.arguments) == "string" then n = n + chars(f.arguments) end
          end
        end
      end
    end
  end
  return math.ceil(n / 4) + MESSAGE_OVERHEAD * count
end

-- ---- the completion cap ------------------------------------------------------

-- The limits a live policy exception may relax for a consumer
-- (exceptions: … grants: { limits: { max_prompt_tokens: 32000 } }).
-- Asked only when the limit would refuse or lower something, so the audit
-- record names an exception only when it changed the outcome. Returns
-- whether value is over, and the limit that applies.
local function over(ctx, lim, k, value)
  local limit = lim[k]
  if value <= limit then return false, limit end
  local id, v = ctx:grant("limits", k)
  if id and type(v) == "number" and v > limit then limit = v end
  return value > limit, limit
end

local CAP_MESSAGES = { "max_tokens" }
local CAP_CHAT = { "max_tokens", "max_completion_tokens" }

-- Lower, refuse or default the completion cap. Returns true when it denied.
local function cap_completion(ctx, lim, body, path)
  if not lim.max_tokens and not lim.default_max_tokens then return false end
  -- the body fields that cap the completion at this door
  local fields, default_field = CAP_CHAT, "max_completion_tokens"
  if path == "/v1/messages" then fields, default_field = CAP_MESSAGES, "max_tokens" end
  local present = false
  for _, f in ipairs(fields) do
    local v = body[f]
    if type(v) == "number" then
      present = true
      local is_over, limit = false, nil
      if lim.max_tokens then is_over, limit = over(ctx, lim, "max_tokens", v) end
      if is_over then
        if lim.max_tokens_mode == "reject" then
          ctx:deny(400, "max_tokens_too_large", ("%s may be at most %d for this application (asked for %d)")
            :format(f, limit, v))
          return true
        end
        body[f] = limit
        ctx.request:set_json(body)
        ctx:decision("modify", ("%s lowered from %d to the limit %d"):format(f, v, limit))
      end
    end
  end
  if not present and lim.default_max_tokens then
    body[default_field] = lim.default_max_tokens
    ctx.request:set_json(body)
    ctx:decision("modify", ("%s set to the default %d"):format(default_field, lim.default_max_tokens))
  end
  return false
end

-- ---- headers -------------------------------------------------------------------

local function strip(ctx, conf)
  local removed
  local exact, prefixes = conf.strip_exact, conf.strip_prefixes
  for name in pairs(ctx.request:headers()) do
    local hit = exact[name]
    if not hit then
      for i = 1, #prefixes do
        local p = prefixes[i]
        if name:sub(1, #p) == p then hit = true; break end
      end
    end
    if hit then
      ctx.request:remove_header(name)
      removed = removed or {}
      removed[#removed + 1] = name
    end
  end
  if removed then
    table.sort(removed)
    ctx:annotate("stripped_headers", removed)
    ctx:decision("modify", "removed client headers that must not travel upstream: "
      .. table.concat(removed, ", "))
  end
end

-- ---- the phase -------------------------------------------------------------------

function limits.access(ctx, conf)
  local lim, scope = effective(conf, ctx.consumer)
  if scope ~= "global" then ctx:annotate("limits_scope", scope) end

  for _, h in ipairs(lim.required_headers or NONE) do
    local v = ctx.request:header(h)
    if v == nil or not v:find("%S") then
      return ctx:deny(400, "missing_header", ("the header '%s' is required by policy"):format(h))
    end
  end

  if lim.max_body_bytes then
    local size = #ctx.request:body()
    local is_over, limit = over(ctx, lim, "max_body_bytes", size)
    if is_over then
      return ctx:deny(413, "request_too_large", ("the request body is %d bytes; the limit is %d")
        :format(size, limit))
    end
  end

  local body = (lim.max_messages or lim.max_prompt_tokens or lim.max_tokens or lim.default_max_tokens)
    and ctx.request:json()
  if type(body) == "table" then
    local messages = body.messages
    if lim.max_messages and type(messages) == "table" then
      local is_over, limit = over(ctx, lim, "max_messages", #messages)
      if is_over then
        return ctx:deny(400, "too_many_messages", ("the request has %d messages; the limit is %d")
          :format(#messages, limit))
      end
    end
    if lim.max_prompt_tokens then
      local est = estimate_tokens(body, messages)
      ctx:annotate("prompt_tokens_estimate", est)
      local is_over, limit = over(ctx, lim, "max_prompt_tokens", est)
      if is_over then
        return ctx:deny(413, "prompt_too_long", ("the prompt is about %d tokens; the limit is %d")
          :format(est, limit))
      end
    end
    -- the cap concerns chat requests only (embeddings have no completion)
    if type(messages) == "table" and cap_completion(ctx, lim, body, ctx.request.path) then return end
  end

  strip(ctx, conf)
end

return limits
