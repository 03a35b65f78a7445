-- anthropic_spec.lua — the Anthropic Messages adapter
-- (lua/sluice/providers/anthropic.lua): OpenAI chat requests out, Messages
-- responses, errors and SSE streams back, against golden fixtures in
-- spec/fixtures/providers/.
local json = require "sluice.json"
local S = require "spec.fixtures.providers.support"
local P = require "sluice.providers.anthropic"

local function target(extra)
  local t = { model = "claude-x", base_path = "", credential = "sk-ant-secret",
              public_model = "gpt-public", now = 1700000000 }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

local function chat(body)
  body.model = body.model or "gpt-public"
  return body
end

local function err_of(req, t)
  local r, err = P.chat_request(req, t or target())
  assert.is_nil(r)
  return err
end

describe("anthropic adapter", function()
  it("names itself and its family", function()
    assert.are.equal("anthropic", P.name)
    assert.are.equal("anthropic", P.family)
  end)

  describe("chat_request", function()
    it("posts to /v1/messages with x-api-key and anthropic-version", function()
      local r = assert(P.chat_request(chat({ messages = { { role = "user", content = "hi" } } }), target()))
      assert.are.equal("POST", r.method)
      assert.are.equal("/v1/messages", r.path)
      assert.is_nil(r.query)
      assert.are.equal("sk-ant-secret", r.headers["x-api-key"])
      assert.are.equal("2023-06-01", r.headers["anthropic-version"])
      assert.are.equal("application/json", r.headers["content-type"])
      assert.is_false(r.stream)
    end)

    it("leaves the version out of the path when the backend URL has one", function()
      local r = assert(P.chat_request(chat({ messages = { { role = "user", content = "hi" } } }),
        target({ base_path = "/v1" })))
      assert.are.equal("/messages", r.path)
    end)

    it("sends a plain chat with the provider model and a default max_tokens", function()
      local r = assert(P.chat_request(chat({ messages = { { role = "user", content = "hi" } } }), target()))
      S.same_json({ model = "claude-x", max_tokens = 4096,
                    messages = { { role = "user", content = { { type = "text", text = "hi" } } } } }, r.body)
      local r2 = assert(P.chat_request(chat({ messages = { { role = "user", content = "hi" } } }),
        target({ max_tokens = 100 })))
      assert.are.equal(100, r2.body.max_tokens)
    end)

    it("prefers max_completion_tokens over max_tokens", function()
      local r = assert(P.chat_request(chat({ max_tokens = 10, max_completion_tokens = 20,
        messages = { { role = "user", content = "hi" } } }), target()))
      assert.are.equal(20, r.body.max_tokens)
    end)

    it("translates system prompts, images, tool calls and tool results (golden)", function()
      local r = assert(P.chat_request(S.json("openai_tools_request.json"), target()))
      S.same_json(S.json("anthropic_tools_request.expected.json"), r.body)
    end)

    it("joins several system and developer messages into one system prompt", function()
      local r = assert(P.chat_request(chat({ messages = {
        { role = "system", content = "A" },
        { role = "developer", content = { { type = "text", text = "B" } } },
        { role = "user", content = "hi" } } }), target()))
      assert.are.equal("A\n\nB", r.body.system)
    end)

    it("merges consecutive turns of one role and keeps multi-turn order", function()
      local r = assert(P.chat_request(chat({ messages = {
        { role = "user", content = "one" }, { role = "user", content = "two" },
        { role = "assistant", content = "three" }, { role = "user", content = "four" } } }), target()))
      S.same_json({
        { role = "user", content = { { type = "text", text = "one" }, { type = "text", text = "two" } } },
        { role = "assistant", content = { { type = "text", text = "three" } } },
        { role = "user", content = { { type = "text", text = "four" } } },
      }, r.body.messages)
    end)

    it("puts parallel tool results into one user turn", function()
      local r = assert(P.chat_request(chat({ messages = {
        { role = "user", content = "go" },
        { role = "assistant", content = json.null, tool_calls = {
          { id = "a", type = "function", ["function"] = { name = "f", arguments = "{}" } },
          { id = "b", type = "function", ["function"] = { name = "g", arguments = "" } } } },
        { role = "tool", tool_call_id = "a", content = "1" },
        { role = "tool", tool_call_id = "b", content = { { type = "text", text = "2" } } } } }), target()))
      S.same_json({
        { role = "user", content = { { type = "text", text = "go" } } },
        { role = "assistant", content = {
          { type = "tool_use", id = "a", name = "f", input = json.decode("{}") },
          { type = "tool_use", id = "b", name = "g", input = json.decode("{}") } } },
        { role = "user", content = {
          { type = "tool_result", tool_use_id = "a", content = "1" },
          { type = "tool_result", tool_use_id = "b", content = { { type = "text", text = "2" } } } } },
      }, r.body.messages)
      assert.matches('"input":{}', json.encode(r.body.messages[2]), 1, true)
    end)

    it("maps a remote image URL to a url source", function()
      local r = assert(P.chat_request(chat({ messages = { { role = "user", content = {
        { type = "image_url", image_url = { url = "https://example.com/cat.png" } } } } } }), target()))
      S.same_json({ type = "image", source = { type = "url", url = "https://example.com/cat.png" } },
        r.body.messages[1].content[1])
    end)

    it("maps every tool_choice form", function()
      local function tc(choice, parallel)
        local r = assert(P.chat_request(chat({ messages = { { role = "user", content = "x" } },
          tools = { { type = "function", ["function"] = { name = "f" } } },
          tool_choice = choice, parallel_tool_calls = parallel }), target()))
        return r.body.tool_choice
      end
      S.same_json({ type = "auto" }, tc("auto"))
      S.same_json({ type = "none" }, tc("none"))
      S.same_json({ type = "any" }, tc("required"))
      S.same_json({ type = "tool", name = "f" }, tc({ type = "function", ["function"] = { name = "f" } }))
      S.same_json({ type = "auto", disable_parallel_tool_use = true }, tc(nil, false))
    end)

    it("gives a tool without parameters an empty object schema", function()
      local r = assert(P.chat_request(chat({ messages = { { role = "user", content = "x" } },
        tools = { { type = "function", ["function"] = { name = "now" } } } }), target()))
      assert.are.equal('{"properties":{},"type":"object"}', S.canon(r.body.tools[1].input_schema))
    end)

    it("turns a string stop into stop_sequences and passes top_p", function()
      local r = assert(P.chat_request(chat({ messages = { { role = "user", content = "x" } },
        stop = "END", top_p = 0.9 }), target()))
      S.same_json({ "END" }, r.body.stop_sequences)
      assert.are.equal(0.9, r.body.top_p)
    end)

    it("streams, and strips the usage chunk unless the client asked for it", function()
      local r = assert(P.chat_request(chat({ stream = true, messages = { { role = "user", content = "x" } } }), target()))
      assert.is_true(r.stream)
      assert.is_true(r.body.stream)
      assert.is_true(r.strip_usage_chunk)
      local r2 = assert(P.chat_request(chat({ stream = true, stream_options = { include_usage = true },
        messages = { { role = "user", content = "x" } } }), target()))
      assert.is_false(r2.strip_usage_chunk)
      assert.is_nil(r2.body.stream_options)
    end)

    it("drops harmless fields and default-valued sampling fields", function()
      local r = assert(P.chat_request(chat({ messages = { { role = "user", content = "x" } },
        seed = 1, store = false, n = 1, presence_penalty = 0, frequency_penalty = 0,
        logprobs = false, logit_bias = {}, service_tier = "auto", parallel_tool_calls = true,
        response_format = { type = "text" }, modalities = { "text" } }), target()))
      assert.is_nil(r.body.seed)
      assert.is_nil(r.body.n)
    end)

    it("estimates the prompt for when no usage comes back", function()
      local r = assert(P.chat_request(chat({ messages = { { role = "user", content = "12345678" } } }), target()))
      assert.are.equal(2, r.prompt_tokens_estimate)
    end)

    describe("refuses what Anthropic cannot do, by name", function()
      local base = function(extra)
        local req = chat({ messages = { { role = "user", content = "x" } } })
        for k, v in pairs(extra) do req[k] = v end
        return req
      end
      local cases = {
        { { n = 2 }, "n > 1 is not supported by the anthropic provider" },
        { { response_format = { type = "json_object" } },
          "response_format json_object (JSON mode) is not supported by the anthropic provider" },
        { { response_format = { type = "json_schema", json_schema = { name = "x", schema = {} } } },
          "response_format json_schema (JSON mode) is not supported by the anthropic provider" },
        { { logprobs = true }, "logprobs is not supported by the anthropic provider" },
        { { presence_penalty = 0.5 }, "presence_penalty is not supported by the anthropic provider" },
        { { frequency_penalty = 1 }, "frequency_penalty is not supported by the anthropic provider" },
        { { temperature = 1.5 }, "temperature above 1 is not supported by the anthropic provider" },
        { { logit_bias = { ["50256"] = -100 } }, "logit_bias is not supported by the anthropic provider" },
        { { modalities = { "text", "audio" } }, "modality 'audio' is not supported by the anthropic provider" },
        { { audio = { voice = "x" }, prediction = {} },
          "the field(s) audio, prediction is not supported by the anthropic provider" },
        { { tools = { { type = "web_search" } } }, "tool type 'web_search' is not supported by the anthropic provider" },
      }
      for _, c in ipairs(cases) do
        it(c[2], function()
          local err = err_of(base(c[1]))
          assert.are.same({ status = 400, code = "unsupported_feature", message = c[2] }, err)
        end)
      end

      it("refuses audio content parts", function()
        local err = err_of(chat({ messages = { { role = "user", content = {
          { type = "input_audio", input_audio = { data = "x", format = "wav" } } } } } }))
        assert.are.same({ status = 400, code = "unsupported_feature",
          message = "content part type 'input_audio' is not supported by the anthropic provider" }, err)
      end)

      it("refuses legacy function roles", function()
        local err = err_of(chat({ messages = { { role = "function", name = "f", content = "1" } } }))
        assert.are.equal("message role 'function' is not supported by the anthropic provider", err.message)
      end)
    end)

    it("rejects malformed requests as invalid_request", function()
      local err = err_of(chat({ messages = {} }))
      assert.are.equal("invalid_request", err.code)
      err = err_of(chat({ messages = { { role = "assistant", content = json.null, tool_calls = {
        { id = "a", type = "function", ["function"] = { name = "f", arguments = "not json" } } } } } }))
      assert.are.same({ status = 400, code = "invalid_request",
        message = "tool call 'f' has arguments that are not a JSON object" }, err)
    end)
  end)

  describe("chat_response", function()
    it("maps Anthropic tool_use to OpenAI tool_calls with usage (golden)", function()
      local body, usage = P.chat_response(200, S.read("anthropic_tool_response.json"), target())
      S.same_json(S.json("anthropic_tool_response.expected.json"), body)
      assert.are.same({ prompt_tokens = 110, completion_tokens = 20, total_tokens = 130, source = "reported" }, usage)
    end)

    it("accepts a decoded body as well as a string", function()
      local body = P.chat_response(200, S.json("anthropic_tool_response.json"), target())
      assert.are.equal("tool_calls", body.choices[1].finish_reason)
    end)

    it("maps every stop reason", function()
      local expect = { end_turn = "stop", stop_sequence = "stop", max_tokens = "length",
                       tool_use = "tool_calls", refusal = "content_filter", pause_turn = "stop" }
      for reason, finish in pairs(expect) do
        local body = P.chat_response(200, { id = "m", model = "claude-x", stop_reason = reason,
          content = { { type = "text", text = "x" } }, usage = { input_tokens = 1, output_tokens = 1 } }, target())
        assert.are.equal(finish, body.choices[1].finish_reason, reason)
      end
    end)

    it("returns null content for a tool-only answer and echoes the provider model without a public one", function()
      local body = P.chat_response(200, { id = "m", model = "claude-x", stop_reason = "tool_use",
        content = { { type = "tool_use", id = "t", name = "f", input = json.decode("{}") } },
        usage = { input_tokens = 1, output_tokens = 1 } }, { model = "claude-x" })
      assert.are.equal(json.null, body.choices[1].message.content)
      assert.are.equal("{}", body.choices[1].message.tool_calls[1]["function"].arguments)
      assert.are.equal("claude-x", body.model)
      assert.are.equal(0, body.created)
    end)

    it("estimates usage when none is reported", function()
      local _, usage = P.chat_response(200, { id = "m", model = "c", stop_reason = "end_turn",
        content = { { type = "text", text = "12345678" } } }, { prompt_tokens_estimate = 7 })
      assert.are.same({ prompt_tokens = 7, completion_tokens = 2, total_tokens = 9, source = "estimated" }, usage)
    end)

    it("reports a body that is not a message", function()
      local body, err = P.chat_response(200, "<html>", target())
      assert.is_nil(body)
      assert.are.equal("upstream_invalid_response", err.code)
    end)
  end)

  describe("error_response", function()
    it("maps an Anthropic error to the OpenAI error shape", function()
      S.same_json({ error = { message = "Overloaded", type = "api_error", code = "overloaded_error" } },
        P.error_response(529, S.read("anthropic_error_overloaded.json")))
      S.same_json({ error = { message = "bad key", type = "authentication_error", code = "authentication_error" } },
        P.error_response(401, '{"type":"error","error":{"type":"authentication_error","message":"bad key"}}'))
    end)

    it("describes an unreadable error body by status", function()
      S.same_json({ error = { message = "the anthropic backend returned HTTP 502", type = "api_error",
        code = "upstream_error" } }, P.error_response(502, "Bad Gateway"))
    end)
  end)

  describe("streaming", function()
    it("turns a tool-use stream into role, content, tool_calls and finish chunks (golden)", function()
      local outs, usage = S.run_stream(P, S.sse("anthropic_stream_tool.sse"), target(), { strip_usage_chunk = true })
      local expected = S.jsonl("anthropic_stream_tool.expected.jsonl")
      assert.are.equal(#expected, #outs)
      for i = 1, #expected do S.same_json(expected[i], outs[i]) end
      assert.are.same({ prompt_tokens = 50, completion_tokens = 42, total_tokens = 92, source = "reported" }, usage)
    end)

    it("returns usage with message_start and again, complete, with message_delta", function()
      local st = P.stream_start(target(), { strip_usage_chunk = true })
      local events = S.sse("anthropic_stream_text.sse")
      local outs, u = P.stream_event(st, events[1])
      assert.are.equal(1, #outs)
      assert.are.same({ prompt_tokens = 30, completion_tokens = 1, total_tokens = 31, source = "reported" }, u)
      assert.are.same({}, (P.stream_event(st, events[3]))) -- ping
      for i = 4, 6 do P.stream_event(st, events[i]) end
      outs, u = P.stream_event(st, events[7])
      assert.are.equal("stop", outs[1].choices[1].finish_reason)
      assert.are.same({ prompt_tokens = 30, completion_tokens = 7, total_tokens = 37, source = "reported" }, u)
      outs = P.stream_event(st, events[8])
      assert.are.same({ "[DONE]" }, outs)
      local final, fu = P.stream_end(st)
      assert.are.same({}, final)
      assert.are.equal(37, fu.total_tokens)
    end)

    it("adds the usage chunk before [DONE] when the client asked for it", function()
      local outs = S.run_stream(P, S.sse("anthropic_stream_text.sse"), target(), { strip_usage_chunk = false })
      assert.are.equal("[DONE]", outs[#outs])
      local u = outs[#outs - 1]
      assert.are.equal("[]", json.encode(u.choices))
      assert.are.same({ prompt_tokens = 30, completion_tokens = 7, total_tokens = 37 }, u.usage)
      assert.are.equal("Hello", outs[2].choices[1].delta.content)
      assert.are.equal(" world", outs[3].choices[1].delta.content)
    end)

    it("emits an error event as an OpenAI error and no [DONE]", function()
      local outs = S.run_stream(P, S.sse("anthropic_stream_error.sse"), target(), {})
      assert.are.equal(2, #outs)
      S.same_json({ error = { message = "Overloaded", type = "api_error", code = "overloaded_error" } }, outs[2])
    end)

    it("reports a stream cut before message_stop as truncated", function()
      local events = S.sse("anthropic_stream_text.sse")
      local st = P.stream_start(target(), {})
      for i = 1, 4 do P.stream_event(st, events[i]) end
      local outs, usage = P.stream_end(st)
      assert.are.equal("upstream_truncated", outs[1].error.code)
      assert.are.equal("reported", usage.source)
    end)

    it("ignores event types it does not know", function()
      local st = P.stream_start(target())
      assert.are.same({}, (P.stream_event(st, { event = "future_event", data = '{"type":"future_event"}' })))
    end)
  end)

  it("has no embeddings", function()
    local r, err = P.embeddings_request({ input = "x" }, target())
    assert.is_nil(r)
    assert.are.same({ status = 400, code = "unsupported_feature",
      message = "embeddings is not supported by the anthropic provider" }, err)
  end)
end)
