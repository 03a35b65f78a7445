-- moderation_spec.lua — the provider adapters leave each provider's safety
-- results in target.moderation, in one shape (common.lua), for whole
-- answers and streams, without changing what they translate.
local json = require "sluice.json"
local azure = require "sluice.providers.azure"
local openai = require "sluice.providers.openai"
local gemini = require "sluice.providers.gemini"
local anthropic = require "sluice.providers.anthropic"

local function filters(flag)
  local f = {}
  for _, c in ipairs({ "hate", "self_harm", "sexual", "violence" }) do
    f[c] = { filtered = false, severity = "safe" }
  end
  for c, v in pairs(flag or {}) do f[c] = v end
  return f
end

local function run_stream(P, target, events)
  local st = P.stream_start(target, {})
  local outs = {}
  for _, e in ipairs(events) do
    local list = P.stream_event(st, e)
    for _, o in ipairs(list) do outs[#outs + 1] = o end
  end
  return outs
end

describe("provider moderation results", function()
  describe("azure", function()
    it("reads per-choice content filters and the prompt's, worst severity first", function()
      local target = { public_model = "pub" }
      local body = json.encode({ id = "x", object = "chat.completion", model = "gpt-4o",
        prompt_filter_results = { { prompt_index = 0,
          content_filter_results = filters({ jailbreak = { filtered = true, detected = true } }) } },
        choices = {
          { index = 0, finish_reason = "stop", message = { role = "assistant", content = "a" },
            content_filter_results = filters({ violence = { filtered = false, severity = "low" } }) },
          { index = 1, finish_reason = "content_filter", message = { role = "assistant", content = "b" },
            content_filter_results = filters({ violence = { filtered = true, severity = "high" } }) } } })
      local doc = assert(azure.chat_response(200, body, target))
      local m = target.moderation
      assert.equals("azure", m.source)
      assert.is_true(m.flagged)
      assert.is_true(m.blocked)
      assert.equals("content_filter", m.reason)
      assert.same({ severity = "high", filtered = true }, m.categories.violence)
      assert.same({ severity = "safe", filtered = false }, m.categories.hate)
      assert.same({ severity = "high", filtered = true }, m.prompt.categories.jailbreak)
      assert.is_true(m.prompt.blocked)
      -- the answer itself is passed on as it came
      assert.equals("high", doc.choices[2].content_filter_results.violence.severity)
      assert.equals("pub", doc.model)
    end)

    it("marks an all-safe answer as neither flagged nor blocked", function()
      local target = {}
      azure.chat_response(200, json.encode({ choices = { { index = 0, finish_reason = "stop",
        message = { role = "assistant", content = "a" }, content_filter_results = filters() } } }), target)
      assert.is_false(target.moderation.flagged)
      assert.is_false(target.moderation.blocked)
    end)

    it("gathers a stream's results on the target given to stream_start", function()
      local target = { public_model = "pub" }
      local function ev(t) return { data = json.encode(t) } end
      local outs = run_stream(azure, target, {
        ev({ id = "", object = "", created = 0, model = "", choices = {},
             prompt_filter_results = { { prompt_index = 0, content_filter_results = filters() } } }),
        ev({ id = "c", model = "gpt-4o", choices = { { index = 0, delta = { content = "x" },
             content_filter_results = filters({ hate = { filtered = false, severity = "medium" } }) } } }),
        ev({ id = "c", model = "gpt-4o", choices = { { index = 0, delta = {}, finish_reason = "stop" } } }),
        { data = "[DONE]" } })
      assert.equals(4, #outs)
      assert.equals("medium", target.moderation.categories.hate.severity)
      assert.is_true(target.moderation.flagged)
      assert.is_false(target.moderation.blocked)
      assert.is_false(target.moderation.prompt.flagged)
    end)
  end)

  describe("openai", function()
    it("records finish_reason content_filter as a block, and nothing otherwise", function()
      local target = {}
      openai.chat_response(200, { choices = { { index = 0, finish_reason = "stop", message = {} } } }, target)
      assert.is_nil(target.moderation)
      openai.chat_response(200, { choices = { { index = 0, finish_reason = "content_filter", message = {} } } }, target)
      assert.equals("openai", target.moderation.source)
      assert.is_true(target.moderation.blocked)
    end)
  end)

  describe("gemini", function()
    local function answer(prob, finish, extra)
      local d = { candidates = { { index = 0, finishReason = finish or "STOP",
        content = { role = "model", parts = { { text = "a" } } },
        safetyRatings = { { category = "HARM_CATEGORY_SEXUALLY_EXPLICIT", probability = prob },
                          { category = "HARM_CATEGORY_DANGEROUS_CONTENT", probability = "NEGLIGIBLE",
                            severity = "HARM_SEVERITY_MEDIUM" } } } } }
      for k, v in pairs(extra or {}) do d[k] = v end
      return d
    end

    it("maps ratings to categories and severities, the worse of probability and severity", function()
      local target = {}
      local doc = assert(gemini.chat_response(200, answer("HIGH", "SAFETY"), target))
      assert.equals("content_filter", doc.choices[1].finish_reason)
      local m = target.moderation
      assert.equals("gemini", m.source)
      assert.equals("high", m.categories.sexual.severity)
      assert.equals("medium", m.categories.dangerous.severity)
      assert.is_true(m.blocked)
      assert.equals("SAFETY", m.reason)
    end)

    it("reads a blocked prompt from promptFeedback", function()
      local target = {}
      local doc = assert(gemini.chat_response(200, { promptFeedback = { blockReason = "SAFETY",
        safetyRatings = { { category = "HARM_CATEGORY_HATE_SPEECH", probability = "HIGH", blocked = true } } } },
        target))
      assert.equals("content_filter", doc.choices[1].finish_reason)
      local m = target.moderation
      assert.is_true(m.blocked)
      assert.is_true(m.prompt.blocked)
      assert.equals("SAFETY", m.prompt.reason)
      assert.same({ severity = "high", filtered = true }, m.prompt.categories.hate)
      assert.is_nil(next(m.categories))
    end)

    it("gathers a stream's ratings", function()
      local target = {}
      local outs = run_stream(gemini, target, {
        { data = json.encode({ candidates = { { index = 0, content = { parts = { { text = "a" } } } } } }) },
        { data = json.encode(answer("LOW")) } })
      assert.equals("stop", outs[#outs].choices[1].finish_reason)
      assert.equals("low", target.moderation.categories.sexual.severity)
      assert.is_false(target.moderation.blocked)
    end)
  end)

  describe("anthropic", function()
    it("records a refusal, whole or streamed", function()
      local target = {}
      anthropic.chat_response(200, { id = "m", content = { { type = "text", text = "no" } },
        stop_reason = "refusal" }, target)
      assert.is_true(target.moderation.blocked)
      assert.equals("refusal", target.moderation.reason)

      local t2 = {}
      run_stream(anthropic, t2, {
        { event = "message_start", data = json.encode({ type = "message_start", message = { id = "m" } }) },
        { event = "message_delta", data = json.encode({ type = "message_delta",
          delta = { stop_reason = "refusal" } }) } })
      assert.is_true(t2.moderation.blocked)
    end)

    it("records nothing for an ordinary answer", function()
      local target = {}
      anthropic.chat_response(200, { id = "m", content = { { type = "text", text = "hi" } },
        stop_reason = "end_turn" }, target)
      assert.is_nil(target.moderation)
    end)
  end)
end)
