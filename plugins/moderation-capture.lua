-- moderation-capture.lua — what a provider's safety system said about an
-- answer is part of the audit record, and policy decides what it means.
--
-- The provider adapters read each provider's own safety fields (Azure
-- content_filter_results / prompt_filter_results, Gemini safetyRatings /
-- promptFeedback.blockReason, finish_reason content_filter, Anthropic
-- stop_reason refusal) into one shape, ctx.response.moderation (see
-- docs/providers.md). This plugin:
--   - records that result as the annotation `moderation` (categories with
--     their severity, whether the provider blocked, the prompt's side);
--   - decides whether it "triggers": a category in `categories` (all when
--     empty) at or above `threshold`, or — with `blocked: true` — any block
--     by the provider; prompt-side results count when `include_prompt`;
--   - on a trigger, by `action`: "record" does nothing more, "flag" records
--     a "flag" decision, "deny" withholds the answer: a whole answer is
--     replaced by an error (deny_status, deny_code) in the door's shape; in
--     a stream the event that triggered is replaced by an error event and
--     nothing more is sent (what was streamed before it has been sent).
-- Without an adapter result (a backend outside the catalog), an answer or
-- chunk whose finish_reason is content_filter still counts as a block.
local capture = { name = "moderation-capture", priority = 750 }

local SEVERITY = { safe = 0, low = 1, medium = 2, high = 3 }

capture.schema = {
  action = { type = "string", one_of = { "record", "flag", "deny" }, default = "flag" },
  threshold = { type = "string", one_of = { "low", "medium", "high" }, default = "medium" },
  categories = { type = "array", elements = { type = "string" }, default = {} },
  blocked = { type = "boolean", default = true },
  include_prompt = { type = "boolean", default = true },
  deny_status = { type = "integer", min = 400, max = 599, default = 400 },
  deny_code = { type = "string", default = "content_filtered",
                check = function(v) return v:match("^[%w_]+$") ~= nil, "use letters, digits and _" end },
  deny_message = { type = "string", default = "the answer was withheld by the content policy" },
}

function capture.init(conf)
  conf.rank = SEVERITY[conf.threshold]
  conf.only = nil
  if #conf.categories > 0 then
    conf.only = {}
    for _, c in ipairs(conf.categories) do conf.only[c:lower()] = true end
  end
  local e = { message = conf.deny_message, type = conf.deny_status == 429 and "rate_limit_error"
    or conf.deny_status >= 500 and "server_error" or "invalid_request_error", code = conf.deny_code }
  conf.openai_error = sluice.json.encode({ error = e })
  conf.anthropic_error = sluice.json.encode({ type = "error",
    error = { type = e.type == "server_error" and "api_error" or e.type, message = conf.deny_message } })
end

-- ---- reading the result ----------------------------------------------------------

-- Why side s (an answer or its prompt) triggers, or nil.
local function side_trigger(conf, s, label)
  if type(s) ~= "table" then return nil end
  local hits = {}
  for name, c in pairs(type(s.categories) == "table" and s.categories or {}) do
    if (not conf.only or conf.only[name]) and type(c) == "table"
      and ((SEVERITY[c.severity] or 0) >= conf.rank or (conf.blocked and c.filtered)) then
      hits[#hits + 1] = name .. " " .. tostring(c.severity) .. (c.filtered and " (filtered)" or "")
    end
  end
  if #hits == 0 and conf.blocked and s.blocked then
    hits[1] = "blocked by the provider" .. (s.reason and (" (" .. tostring(s.reason) .. ")") or "")
  end
  if #hits == 0 then return nil end
  table.sort(hits)
  return label .. ": " .. table.concat(hits, ", ")
end

local function trigger(conf, m)
  local why = side_trigger(conf, m, "answer")
  if not why and conf.include_prompt then why = side_trigger(conf, m.prompt, "prompt") end
  return why
end

-- The adapter's result, or a block read from an OpenAI-shaped piece.
local function result_of(ctx, data)
  local r = ctx.response
  local m = r and r.moderation
  if type(m) == "table" then return m end
  if data:find('"finish_reason":"content_filter"', 1, true)
    or data:find('"finish_reason": "content_filter"', 1, true) then
    ctx.vars.fallback = true
  end
  if ctx.vars.fallback then
    return { source = "finish_reason", flagged = true, blocked = true, reason = "content_filter",
             categories = {} }
  end
  return nil
end

-- ---- recording -------------------------------------------------------------------------

local function summary(m)
  local function side(s)
    local cats = {}
    for name, c in pairs(type(s.categories) == "table" and s.categories or {}) do
      if type(c) == "table" then cats[name] = { severity = c.severity, filtered = c.filtered == true } end
    end
    return { flagged = s.flagged == true, blocked = s.blocked == true, reason = s.reason,
             categories = cats }
  end
  local out = side(m)
  out.source = m.source
  if type(m.prompt) == "table" then out.prompt = side(m.prompt) end
  return out
end

local function record(ctx, m)
  if ctx.vars.recorded or not m then return end
  ctx.vars.recorded = true
  ctx:annotate("moderation", summary(m))
end

-- ---- phases ------------------------------------------------------------------------------

function capture.body_filter(ctx, conf, data, last)
  local v = ctx.vars
  if v.cut then return "" end -- a denied stream sends nothing more
  local streaming = not last or v.streaming
  if not last then v.streaming = true end
  local m = result_of(ctx, data)
  if not m then return nil end
  local why = not v.triggered and trigger(conf, m)
  local anthropic = ctx.request.path == "/v1/messages"
  if why then
    v.triggered = true
    if conf.action ~= "record" then
      ctx:decision(conf.action == "deny" and "deny" or "flag", "provider moderation " .. why)
    end
    if conf.action == "deny" then
      record(ctx, m)
      if streaming then
        v.cut = true
        ctx:end_stream()
        if anthropic then return "event: error\ndata: " .. conf.anthropic_error .. "\n\n" end
        return "data: " .. conf.openai_error .. "\n\n"
      end
      ctx:set_status(conf.deny_status)
      return anthropic and conf.anthropic_error or conf.openai_error
    end
  end
  if not streaming or data:find("[DONE]", 1, true) or data:find("message_stop", 1, true) then
    record(ctx, m)
  end
  return nil
end

-- A stream that ended without [DONE] (an upstream error, a cut) is
-- recorded here.
function capture.log(ctx, conf, rec)
  local r = ctx.response
  if r and type(r.moderation) == "table" then record(ctx, r.moderation) end
end

return capture
