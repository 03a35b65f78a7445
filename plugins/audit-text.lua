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
  return { access = conf.prompt, body_filter = conf.completion }
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
  elseif body.input ~= nil then
    text_of(body.input, out)
  end
  if #out > 0 then ctx:annotate("prompt", concat(out, "\n"):sub(1, conf.max_chars)) end
end

-- Answers reach body_filter in the OpenAI shape: a whole body, or SSE
-- events with choices[].delta.content.
function audit_text.body_filter(ctx, conf, data, last)
  local v = ctx.vars
  local parts = v.parts
  if not parts then parts = {}; v.parts = parts; v.n = 0 end
  if v.n < conf.max_chars then
    local ct = ctx.response and ctx.response.headers["content-type"] or ""
    local docs = {}
    if ct:find("text/event-stream", 1, true) then
      for line in data:gmatch("data: ([^\n]+)") do
        if line ~= "[DONE]" then docs[#docs + 1] = sluice.json.decode(line) end
      end
    else
      docs[1] = sluice.json.decode(data)
    end
    for _, d in ipairs(docs) do
      for _, ch in ipairs(type(d) == "table" and type(d.choices) == "table" and d.choices or {}) do
        local m = type(ch) == "table" and (ch.delta or ch.message)
        if type(m) == "table" and type(m.content) == "string" then
          parts[#parts + 1] = m.content
          v.n = v.n + #m.content
        end
      end
    end
  end
  if last and #parts > 0 then ctx:annotate("completion", concat(parts):sub(1, conf.max_chars)) end
end

return audit_text
