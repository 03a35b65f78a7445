-- audit_text_spec.lua — prompt and completion text reach the audit record
-- only when policy asks, and only after redaction.
local t = require "sluice.test"

local MODELS = { m = { targets = { { backend = "mock" } } } }

local function chain(conf, with_redact)
  t.plugin_dirs = { "plugins" }
  local items = { { name = "audit-text", config = conf } }
  if with_redact then items[2] = { name = "redact", config = { output = true } } end
  return t.chain(items, { models = MODELS })
end

local function ask(c, text)
  return t.request(c, { json = { model = "m", messages = { { role = "system", content = "be brief" },
                                                            { role = "user", content = text } } } })
end

describe("audit-text plugin", function()
  it("records the prompt as it left the gateway: redacted", function()
    local c = chain({}, true)
    local res = ask(c, "mail jane@example.com")
    local _, audit = t.log(c, res.ctx)
    assert.equals("system: be brief\nuser: mail [EMAIL_1]", audit.annotations["audit-text"].prompt)
  end)

  it("records no completion unless asked, and runs no body filter for it", function()
    local c = chain({})
    assert.equals(0, #c.body_filter)
  end)

  it("records a streamed completion when asked, cut at max_chars", function()
    local c = chain({ completion = true, max_chars = 16 }, true)
    local res = ask(c, "hi")
    t.upstream_response(c, res.ctx, 200, { ["content-type"] = "text/event-stream" })
    local ev = 'data: {"choices":[{"index":0,"delta":{"content":"%s"}}]}\n\n'
    t.body_filter(c, res.ctx, ev:format("Hello, write to "), false)
    t.body_filter(c, res.ctx, ev:format("bob@example.com now"), false)
    t.body_filter(c, res.ctx, "data: [DONE]\n\n", true)
    local _, audit = t.log(c, res.ctx)
    local rec = audit.annotations["audit-text"].completion
    assert.equals(16, #rec)
    assert.is_nil(rec:find("bob@", 1, true))
  end)

  it("records the completion of a stream a filter cut short, and long events", function()
    local c = chain({ completion = true })
    local res = ask(c, "hi")
    t.upstream_response(c, res.ctx, 200, { ["content-type"] = "text/event-stream" })
    local long = string.rep("x", 3000)
    t.body_filter(c, res.ctx, ('data: {"choices":[{"index":0,"delta":{"content":"%s"}}]}\n\n'):format(long), false)
    -- no last piece: the stream ended early
    local _, audit = t.log(c, res.ctx)
    assert.equals(3000, #audit.annotations["audit-text"].completion)
  end)

  it("records an answer in the Anthropic shape", function()
    local c = chain({ completion = true })
    local res = t.request(c, { path = "/v1/messages", json = { model = "m", max_tokens = 5,
                                                             messages = { { role = "user", content = "hi" } } } })
    t.upstream_response(c, res.ctx, 200, { ["content-type"] = "text/event-stream" })
    t.body_filter(c, res.ctx, 'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
      .. '"delta":{"type":"text_delta","text":"Bonjour"}}\n\n', false)
    local _, audit = t.log(c, res.ctx)
    assert.equals("Bonjour", audit.annotations["audit-text"].completion)
  end)

  it("records nothing for a request outside the AI front door", function()
    local c = chain({})
    local res = t.request(c, { method = "GET", path = "/v1/files" })
    local _, audit = t.log(c, res.ctx)
    assert.is_nil(audit.annotations)
  end)
end)
