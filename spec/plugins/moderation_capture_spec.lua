-- moderation_capture_spec.lua — behaviour of the moderation-capture plugin
-- through the real runtime and the real provider adapters: a request goes
-- through the catalog, an attempt is prepared for an Azure, Gemini or
-- Anthropic backend, and the provider's own answer bytes are translated
-- (the adapter leaves its safety results in ctx.response.moderation) before
-- the plugin records, flags or withholds them.
-- Run from the repository root: ./build/sluice spec spec/plugins/moderation_capture_spec.lua
local t = require "sluice.test"
local json = require "sluice.json"
local runtime = require "sluice.runtime"

local MODELS = {
  ["chat-az"] = { targets = { { backend = "az", model = "gpt-4o" } } },
  ["chat-gem"] = { targets = { { backend = "gem", model = "gemini-2.0-flash" } } },
  ["chat-claude"] = { targets = { { backend = "anth", model = "claude-x" } } },
  ["chat-oai"] = { targets = { { backend = "oai", model = "gpt-4o" } } },
}
local BACKENDS = { az = { provider = "azure" }, gem = { provider = "gemini" },
                   anth = { provider = "anthropic" }, oai = { provider = "openai" } }

local function chain(config)
  t.plugin_dirs = { "plugins" }
  return t.chain({ { name = "moderation-capture", config = config or {} } },
                 { models = MODELS, backends = BACKENDS, default_backend = "oai" })
end

-- ---- provider answers ------------------------------------------------------------

local function azure_filters(flag)
  local f = {}
  for _, c in ipairs({ "hate", "self_harm", "sexual", "violence" }) do
    f[c] = { filtered = false, severity = "safe" }
  end
  for c, sev in pairs(flag or {}) do f[c] = { filtered = sev == "high", severity = sev } end
  return f
end

local function azure_answer(flag, finish, prompt_flag)
  return json.encode({
    id = "chatcmpl-1", object = "chat.completion", created = 1, model = "gpt-4o",
    prompt_filter_results = { { prompt_index = 0, content_filter_results = azure_filters(prompt_flag) } },
    choices = { { index = 0, finish_reason = finish or "stop",
                  message = { role = "assistant", content = "an answer" },
                  content_filter_results = azure_filters(flag) } },
    usage = { prompt_tokens = 3, completion_tokens = 2, total_tokens = 5 },
  })
end

local function gemini_answer(prob, finish)
  return json.encode({
    candidates = { { index = 0, finishReason = finish or "STOP",
      content = { role = "model", parts = { { text = "an answer" } } },
      safetyRatings = { { category = "HARM_CATEGORY_HATE_SPEECH", probability = prob or "NEGLIGIBLE" },
                        { category = "HARM_CATEGORY_HARASSMENT", probability = "NEGLIGIBLE" } } } },
    usageMetadata = { promptTokenCount = 3, candidatesTokenCount = 2, totalTokenCount = 5 },
  })
end

-- Run a request for `model` and feed `pieces` (the provider's bytes: one
-- whole body, or a list of SSE events) through the adapter and the chain.
-- Returns what the client gets (joined), the status override, the ctx.
local function serve(c, model, pieces, opts)
  opts = opts or {}
  local stream = type(pieces) == "table"
  local res = t.request(c, { path = opts.path, json = { model = model, stream = stream or nil,
    max_tokens = 10, messages = { { role = "user", content = "hi" } } } })
  assert.equals("ok", res.action, res.message)
  local st = res.ctx
  assert.equals("ok", (runtime.prepare(c, st, 1, res.targets[1])))
  t.upstream_response(c, st, 200, { ["content-type"] = stream and "text/event-stream" or "application/json" },
                      res.targets[1])
  if not stream then
    local out, status = t.body_filter(c, st, pieces, true)
    return out, status, st
  end
  local out = {}
  for _, ev in ipairs(pieces) do out[#out + 1] = t.body_filter(c, st, ev, false) end
  return table.concat(out), nil, st
end

local function decisions(st, outcome)
  local out = {}
  for _, d in ipairs(t.decisions(st)) do
    if d.plugin == "moderation-capture" and d.outcome == outcome then out[#out + 1] = d end
  end
  return out
end

local function recorded(c, st)
  local _, audit = t.log(c, st, { status = 200 })
  return ((audit.annotations or {})["moderation-capture"] or {}).moderation
end

describe("moderation-capture plugin", function()
  describe("records the provider's results", function()
    it("from Azure: every category with its severity, the prompt's too", function()
      local c = chain()
      local out, _, st = serve(c, "chat-az", azure_answer({ violence = "low" }, "stop", { hate = "low" }))
      assert.equals("an answer", json.decode(out).choices[1].message.content)
      local m = recorded(c, st)
      assert.equals("azure", m.source)
      assert.is_true(m.flagged)
      assert.is_false(m.blocked)
      assert.same({ severity = "low", filtered = false }, m.categories.violence)
      assert.same({ severity = "safe", filtered = false }, m.categories.hate)
      assert.same({ severity = "low", filtered = false }, m.prompt.categories.hate)
    end)

    it("from Gemini: safety ratings by category name", function()
      local c = chain()
      local _, _, st = serve(c, "chat-gem", gemini_answer("LOW"))
      local m = recorded(c, st)
      assert.equals("gemini", m.source)
      assert.equals("low", m.categories.hate.severity)
      assert.equals("safe", m.categories.harassment.severity)
    end)

    it("from Anthropic: a refusal as a block", function()
      local c = chain({ action = "record" })
      local _, _, st = serve(c, "chat-claude", json.encode({ id = "m1", type = "message", role = "assistant",
        model = "claude-x", content = { { type = "text", text = "I can't" } }, stop_reason = "refusal",
        usage = { input_tokens = 3, output_tokens = 2 } }))
      local m = recorded(c, st)
      assert.equals("anthropic", m.source)
      assert.is_true(m.blocked)
      assert.equals("refusal", m.reason)
    end)

    it("nothing when the provider says nothing about safety", function()
      local c = chain()
      local _, _, st = serve(c, "chat-oai", json.encode({ id = "x", object = "chat.completion",
        choices = { { index = 0, finish_reason = "stop", message = { role = "assistant", content = "a" } } } }))
      assert.is_nil(recorded(c, st))
      assert.equals(0, #t.decisions(st))
    end)
  end)

  describe("flags (the default action)", function()
    it("a category at or above the threshold, with a flag decision naming it", function()
      local c = chain()
      local out, _, st = serve(c, "chat-az", azure_answer({ hate = "medium" }))
      assert.equals("an answer", json.decode(out).choices[1].message.content)
      local f = decisions(st, "flag")
      assert.equals(1, #f)
      assert.equals("provider moderation answer: hate medium", f[1].reason)
    end)

    it("nothing below the threshold", function()
      local c = chain({ threshold = "high" })
      local _, _, st = serve(c, "chat-gem", gemini_answer("MEDIUM"))
      assert.equals(0, #decisions(st, "flag"))
    end)

    it("only the configured categories", function()
      local c = chain({ categories = { "violence" } })
      local _, _, st = serve(c, "chat-az", azure_answer({ hate = "medium" }))
      assert.equals(0, #decisions(st, "flag"))
      _, _, st = serve(c, "chat-az", azure_answer({ violence = "medium" }))
      assert.equals(1, #decisions(st, "flag"))
    end)

    it("a provider block whatever the categories, unless blocked is off", function()
      local c = chain({ categories = { "violence" } })
      local _, _, st = serve(c, "chat-gem", gemini_answer("NEGLIGIBLE", "SAFETY"))
      assert.equals("provider moderation answer: blocked by the provider (SAFETY)",
                    decisions(st, "flag")[1].reason)
      c = chain({ categories = { "violence" }, blocked = false })
      _, _, st = serve(c, "chat-gem", gemini_answer("NEGLIGIBLE", "SAFETY"))
      assert.equals(0, #decisions(st, "flag"))
    end)

    it("the prompt's results unless include_prompt is off", function()
      local c = chain()
      local _, _, st = serve(c, "chat-az", azure_answer(nil, "stop", { self_harm = "medium" }))
      assert.equals("provider moderation prompt: self_harm medium", decisions(st, "flag")[1].reason)
      c = chain({ include_prompt = false })
      _, _, st = serve(c, "chat-az", azure_answer(nil, "stop", { self_harm = "medium" }))
      assert.equals(0, #decisions(st, "flag"))
    end)
  end)

  describe("denies", function()
    it("a whole answer: replaced by an OpenAI error that says nothing of the content", function()
      local c = chain({ action = "deny", deny_status = 422 })
      local out, status, st = serve(c, "chat-az", azure_answer({ hate = "high" }, "content_filter"))
      local e = json.decode(out).error
      assert.equals("content_filtered", e.code)
      assert.equals("invalid_request_error", e.type)
      assert.equals("the answer was withheld by the content policy", e.message)
      assert.is_nil(out:find("an answer", 1, true))
      assert.equals(1, #decisions(st, "deny"))
      assert.is_true(recorded(c, st).blocked)
      assert.equals(422, status)
    end)

    it("a whole answer at the Anthropic door with an Anthropic error", function()
      local c = chain({ action = "deny" })
      local out = serve(c, "chat-gem", gemini_answer("HIGH"), { path = "/v1/messages" })
      local doc = json.decode(out)
      assert.equals("error", doc.type)
      assert.equals("invalid_request_error", doc.error.type)
    end)

    it("a stream from the event that triggered: an error event, then nothing", function()
      local c = chain({ action = "deny" })
      local function ev(delta, filters, finish)
        return "data: " .. json.encode({ id = "c1", object = "chat.completion.chunk", created = 1, model = "gpt-4o",
          choices = { { index = 0, delta = delta, finish_reason = finish or json.null,
                        content_filter_results = filters } } }) .. "\n\n"
      end
      local out, _, st = serve(c, "chat-az", {
        ev({ role = "assistant", content = "" }, azure_filters()),
        ev({ content = "fine" }, azure_filters()),
        ev({ content = "nasty" }, azure_filters({ violence = "high" })),
        ev({}, nil, "content_filter"),
        "data: [DONE]\n\n",
      })
      assert.matches("fine", out, 1, true)
      assert.is_nil(out:find("nasty", 1, true))
      assert.is_nil(out:find("[DONE]", 1, true))
      assert.matches('"code":"content_filtered"', out, 1, true)
      assert.equals(1, #decisions(st, "deny"))
    end)
  end)

  it("counts finish_reason content_filter from an OpenAI backend as a block", function()
    local c = chain({ action = "deny" })
    local out, _, st = serve(c, "chat-oai", json.encode({ id = "x", object = "chat.completion",
      choices = { { index = 0, finish_reason = "content_filter", message = { role = "assistant", content = "a" } } } }))
    assert.equals("content_filtered", json.decode(out).error.code)
    assert.is_true(recorded(c, st).blocked)
  end)

  it("refuses a deny_code that is not an identifier", function()
    t.plugin_dirs = { "plugins" }
    local ch, err = t.try_chain({ { name = "moderation-capture", config = { deny_code = "no way" } } })
    assert.is_nil(ch)
    assert.matches("deny_code: use letters, digits and _", err)
  end)
end)
