-- audit-text.lua — put the prompt and the completion text into the audit
-- record, when (and only when) a policy asks for it.
--
-- By default the audit record holds no prompt or completion text. Some
-- workloads must keep it (a regulator's retention rule, an investigation).
-- This plugin runs after redact (priority 100 < 700), so what it records
-- is what left the gateway: redacted. For completions, turn on redact's
-- `output` too, or the answer is recorded as the provider wrote it.
-- Text is cut at `max_chars` per field.
local audit_text = { name = "audit-text", priority = 100 }

audit_text.schema = {
  prompt = { type = "boolean", default = true },
  completion = { type = "boolean", default = false },
  max_chars = { type = "integer", min = 16, max = 65536, default = 4000 },
}

function audit_text.phases(conf)
  return { access = conf.prompt, body_filter = conf.completion, log = conf.completion }
end

local concat = table.concat

local function text_of(content, out)
  if type(content) == "string" then
    out[#out + 1] = content
  elseif type(content) == "table" then
    for _, part in ipairs(content) do
      if type(part) == "table" and type(part.text) == "string" then out[#out + 1] = part.text end
    end
  end
end

function audit_text.access(ctx, conf)
  local body = ctx.model and ctx.request:json()
  if type(body) ~= "table" then return end
  local out = {}
  if body.system ~= nil then text_of(body.system, out) end -- Anthropic's door
  if type(body.messages) == "table" then
    for _, m in ipairs(body.messages) do
      if type(m) == "table" then
        local before = #out
        text_of(m.content, out)
        if #out > before then out[before + 1] = tostring(m.role) .. ": " .. out[before + 1] end
      end
    end
  elseif type(body.input) == "string" then
    out[1] = body.input
  elseif type(body.input) == "table" then -- embeddings: a list of strings
    for _, x in ipairs(body.input) do
      if type(x) == "string" then out[#out + 1] = x end
    end
  end
  if #out > 0 then ctx:annotate("prompt", concat(out, "\n"):sub(1, conf.max_chars)) end
end

-- The text of one answer document: OpenAI choices (message or delta), or
-- Anthropic content blocks and content_block_delta events.
local function answer_text(d, parts)
  if type(d) ~= "table" then return end
  if type(d.choices) == "table" then
    for _, ch in ipairs(d.choices) do
      local m = type(ch) == "table" and (ch.delta or ch.message)
      if type(m) == "table" and type(m.content) == "string" then parts[#parts + 1] = m.content end
    end
  elseif type(d.content) == "table" then
    for _, b in ipairs(d.content) do
      if type(b) == "table" and type(b.text) == "string" then parts[#parts + 1] = b.text end
    end
  elseif type(d.delta) == "table" and type(d.delta.text) == "string" then
    parts[#parts + 1] = d.delta.text
  end
end

-- Each SSE "data:" line's JSON, found with plain searches (an event can be
-- long: no pattern backtracking over it).
local function each_data(data, fn)
  local at = 1
  while true do
    local i = data:find("data:", at, true)
    if not i then return end
    local j = data:find("\n", i, true) or #data + 1
    local line = data:sub(i + 5, j - 1)
    if line:byte(1) == 32 then line = line:sub(2) end
    if line ~= "[DONE]" then fn(sluice.json.decode(line)) end
    at = j + 1
  end
end

-- Answers reach body_filter translated for the client's door: a whole
-- body, or SSE events.
function audit_text.body_filter(ctx, conf, data)
  local v = ctx.vars
  local parts = v.parts
  if not parts then parts = {}; v.parts = parts; v.n = 0 end
  if v.n >= conf.max_chars then return end
  local before = #parts
  local ct = ctx.response and ctx.response.headers["content-type"] or ""
  if ct:find("text/event-stream", 1, true) then
    each_data(data, function(d) answer_text(d, parts) end)
  else
    answer_text(sluice.json.decode(data), parts)
  end
  for i = before + 1, #parts do v.n = v.n + #parts[i] end
end

-- Recorded when the request is over, however it ended (a stream cut by
-- quota or moderation included).
function audit_text.log(ctx, conf)
  local parts = ctx.vars.parts
  if parts and #parts > 0 then ctx:annotate("completion", concat(parts):sub(1, conf.max_chars)) end
end

return audit_text
