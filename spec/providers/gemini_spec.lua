-- gemini_spec.lua — the Gemini adapter (lua/sluice/providers/gemini.lua):
-- generateContent / streamGenerateContent?alt=sse / batchEmbedContents
-- against golden fixtures in spec/fixtures/providers/.
local json = require "sluice.json"
local S = require "spec.fixtures.providers.support"
local P = require "sluice.providers.gemini"

local function target(extra)
  local t = { model = "gemini-2.0-flash", base_path = "", credential = "AIza-secret",
              public_model = "gpt-public", now = 1700000000 }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

local function chat(extra)
  local req = { model = "gpt-public", messages = { { role = "user", content = "hi" } } }
  for k, v in pairs(extra or {}) do req[k] = v end
  return req
end

local function err_of(req)
  local r, err = P.chat_request(req, target())
  assert.is_nil(r)
  return err
end

describe("gemini adapter", function()
  it("names itself and its family", function()
    assert.are.equal("gemini", P.name)
    assert.are.equal("gemini", P.family)
  end)

  describe("chat_request", function()
    it("posts generateContent for the provider model with x-goog-api-key", function()
      local r = assert(P.chat_request(chat(), target()))
      assert.are.equal("POST", r.method)
      assert.are.equal("/v1beta/models/gemini-2.0-flash:generateContent", r.path)
      assert.is_nil(r.query)
      assert.are.equal("AIza-secret", r.headers["x-goog-api-key"])
      assert.is_false(r.stream)
      S.same_json({ contents = { { role = "user", parts = { { text = "hi" } } } } }, r.body)
    end)

    it("streams with streamGenerateContent?alt=sse", function()
      local r = assert(P.chat_request(chat({ stream = true }), target({ model = "models/gemini-2.5-pro", base_path = "/v1" })))
      assert.are.equal("/models/gemini-2.5-pro:streamGenerateContent", r.path)
      assert.are.same({ alt = "sse" }, r.query)
      assert.is_true(r.stream)
      assert.is_true(r.strip_usage_chunk)
    end)

    it("escapes a model name so it cannot change the path", function()
      local r = assert(P.chat_request(chat(), target({ model = "x/../y?z" })))
      assert.are.equal("/v1beta/models/x%2F..%2Fy%3Fz:generateContent", r.path)
    end)

    it("translates system prompts, images, tool calls and tool results (golden)", function()
      local r = assert(P.chat_request(S.json("openai_tools_request.json"), target()))
      S.same_json(S.json("gemini_tools_request.expected.json"), r.body)
    end)

    it("keeps multi-turn roles as user and model", function()
      local r = assert(P.chat_request(chat({ messages = {
        { role = "user", content = "a" }, { role = "assistant", content = "b" }, { role = "user", content = "c" } } }), target()))
      S.same_json({ { role = "user", parts = { { text = "a" } } }, { role = "model", parts = { { text = "b" } } },
                    { role = "user", parts = { { text = "c" } } } }, r.body.contents)
    end)

    it("wraps a tool result that is not a JSON object", function()
      local r = assert(P.chat_request(chat({ messages = {
        { role = "user", content = "go" },
        { role = "assistant", tool_calls = { { id = "c1", type = "function", ["function"] = { name = "f", arguments = "" } } } },
        { role = "tool", tool_call_id = "c1", content = "sunny" } } }), target()))
      S.same_json({ functionResponse = { name = "f", response = { content = "sunny" } } }, r.body.contents[3].parts[1])
      assert.matches('"args":{}', json.encode(r.body.contents[2].parts[1]), 1, true)
    end)

    it("refuses a tool result for a call nobody made", function()
      local err = err_of(chat({ messages = { { role = "user", content = "go" },
        { role = "tool", tool_call_id = "nope", content = "x" } } }))
      assert.are.same({ status = 400, code = "invalid_request",
        message = "tool message answers tool_call_id 'nope', which no earlier assistant message called" }, err)
    end)

    it("maps sampling fields into generationConfig", function()
      local r = assert(P.chat_request(chat({ max_completion_tokens = 50, temperature = 1.5, top_p = 0.5,
        stop = "END", n = 2, seed = 7, presence_penalty = 0.1, frequency_penalty = 0.2, user = "u" }), target()))
      S.same_json({ maxOutputTokens = 50, temperature = 1.5, topP = 0.5, stopSequences = { "END" },
        candidateCount = 2, seed = 7, presencePenalty = 0.1, frequencyPenalty = 0.2 }, r.body.generationConfig)
    end)

    it("maps JSON mode to responseMimeType", function()
      local r = assert(P.chat_request(chat({ response_format = { type = "json_object" } }), target()))
      S.same_json({ responseMimeType = "application/json" }, r.body.generationConfig)
    end)

    it("maps a JSON schema to responseSchema in Gemini's dialect", function()
      local r = assert(P.chat_request(chat({ response_format = { type = "json_schema", json_schema = {
        name = "person", strict = true, schema = json.decode([[{
          "type": "object", "additionalProperties": false, "$schema": "x",
          "properties": {
            "name": {"type": "string", "description": "full name"},
            "age": {"type": ["integer", "null"]},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
            "pet": {"anyOf": [{"type": "string"}, {"type": "number"}]}
          },
          "required": ["name", "age"]
        }]]) } } }), target()))
      S.same_json(json.decode([[{
        "responseMimeType": "application/json",
        "responseSchema": {
          "type": "OBJECT",
          "properties": {
            "name": {"type": "STRING", "description": "full name"},
            "age": {"type": "INTEGER", "nullable": true},
            "tags": {"type": "ARRAY", "items": {"type": "STRING", "enum": ["a", "b"]}},
            "pet": {"anyOf": [{"type": "STRING"}, {"type": "NUMBER"}]}
          },
          "required": ["name", "age"]
        }
      }]]), r.body.generationConfig)
    end)

    it("maps every tool_choice form", function()
      local function tc(choice)
        local r = assert(P.chat_request(chat({ tools = { { type = "function", ["function"] = { name = "f" } } },
          tool_choice = choice }), target()))
        return r.body.toolConfig
      end
      S.same_json({ functionCallingConfig = { mode = "AUTO" } }, tc("auto"))
      S.same_json({ functionCallingConfig = { mode = "NONE" } }, tc("none"))
      S.same_json({ functionCallingConfig = { mode = "ANY" } }, tc("required"))
      S.same_json({ functionCallingConfig = { mode = "ANY", allowedFunctionNames = { "f" } } },
        tc({ type = "function", ["function"] = { name = "f" } }))
    end)

    it("leaves out the parameters of a tool that takes none", function()
      local r = assert(P.chat_request(chat({ tools = { { type = "function", ["function"] = {
        name = "now", parameters = json.decode('{"type":"object","properties":{}}') } } } }), target()))
      S.same_json({ { functionDeclarations = { { name = "now" } } } }, r.body.tools)
    end)

    describe("refuses what Gemini cannot do, by name", function()
      local cases = {
        { { messages = { { role = "user", content = { { type = "image_url", image_url = { url = "https://x/cat.png" } } } } } },
          "image_url with a remote URL (send a data: URL) is not supported by the gemini provider" },
        { { n = 2, stream = true }, "n > 1 with stream is not supported by the gemini provider" },
        { { logprobs = true }, "logprobs is not supported by the gemini provider" },
        { { logit_bias = { ["1"] = 5 } }, "logit_bias is not supported by the gemini provider" },
        { { functions = {} }, "the field(s) functions is not supported by the gemini provider" },
        { { response_format = { type = "json_schema", json_schema = { schema = { ["$ref"] = "#/x" } } } },
          "JSON Schema $ref in a schema is not supported by the gemini provider" },
        { { tools = { { type = "code_interpreter" } } }, "tool type 'code_interpreter' is not supported by the gemini provider" },
      }
      for _, c in ipairs(cases) do
        it(c[2], function()
          assert.are.same({ status = 400, code = "unsupported_feature", message = c[2] }, err_of(chat(c[1])))
        end)
      end
    end)
  end)

  describe("chat_response", function()
    it("maps functionCall parts to tool_calls, skips thoughts and counts them as completion (golden)", function()
      local body, usage = P.chat_response(200, S.read("gemini_tool_response.json"), target())
      S.same_json(S.json("gemini_tool_response.expected.json"), body)
      assert.are.same({ prompt_tokens = 40, completion_tokens = 17, total_tokens = 57, source = "reported" }, usage)
    end)

    it("maps finish reasons", function()
      local expect = { STOP = "stop", MAX_TOKENS = "length", SAFETY = "content_filter",
                       RECITATION = "content_filter", PROHIBITED_CONTENT = "content_filter", OTHER = "stop" }
      for reason, finish in pairs(expect) do
        local body = P.chat_response(200, { candidates = { { content = { parts = { { text = "x" } } },
          finishReason = reason } } }, target())
        assert.are.equal(finish, body.choices[1].finish_reason, reason)
      end
    end)

    it("answers a blocked prompt with content_filter and estimates usage", function()
      local body, usage = P.chat_response(200, { promptFeedback = { blockReason = "SAFETY" } },
        target({ prompt_tokens_estimate = 3 }))
      assert.are.equal("content_filter", body.choices[1].finish_reason)
      assert.are.equal(json.null, body.choices[1].message.content)
      assert.are.same({ prompt_tokens = 3, completion_tokens = 0, total_tokens = 3, source = "estimated" }, usage)
    end)

    it("returns one choice per candidate", function()
      local body = P.chat_response(200, { candidates = {
        { content = { parts = { { text = "a" } } }, finishReason = "STOP", index = 0 },
        { content = { parts = { { text = "b" } } }, finishReason = "STOP", index = 1 } } }, target())
      assert.are.equal(2, #body.choices)
      assert.are.equal("b", body.choices[2].message.content)
      assert.are.equal(1, body.choices[2].index)
    end)
  end)

  describe("error_response", function()
    it("maps a Gemini error to the OpenAI error shape", function()
      S.same_json({ error = { message = "Resource has been exhausted (e.g. check quota).",
        type = "rate_limit_error", code = "RESOURCE_EXHAUSTED" } },
        P.error_response(429, S.read("gemini_error_quota.json")))
    end)

    it("reads the list form streamGenerateContent errors come in", function()
      local e = P.error_response(400, '[{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}]')
      S.same_json({ error = { message = "bad", type = "invalid_request_error", code = "INVALID_ARGUMENT" } }, e)
    end)
  end)

  describe("streaming", function()
    it("turns text chunks into OpenAI chunks with a usage chunk when asked (golden)", function()
      local outs, usage = S.run_stream(P, S.sse("gemini_stream_text.sse"), target(), { strip_usage_chunk = false })
      local expected = S.jsonl("gemini_stream_text.expected.jsonl")
      assert.are.equal(#expected, #outs)
      for i = 1, #expected do S.same_json(expected[i], outs[i]) end
      assert.are.same({ prompt_tokens = 12, completion_tokens = 3, total_tokens = 15, source = "reported" }, usage)
    end)

    it("turns a functionCall chunk into a whole tool call and finishes with tool_calls (golden)", function()
      local outs = S.run_stream(P, S.sse("gemini_stream_tool.sse"), { model = "gemini-2.0-flash" }, { strip_usage_chunk = true })
      local expected = S.jsonl("gemini_stream_tool.expected.jsonl")
      assert.are.equal(#expected, #outs)
      for i = 1, #expected do S.same_json(expected[i], outs[i]) end
    end)

    it("returns usage with every event that carries usageMetadata", function()
      local st = P.stream_start(target(), {})
      local events = S.sse("gemini_stream_text.sse")
      local _, u1 = P.stream_event(st, events[1])
      assert.are.equal(12, u1.prompt_tokens)
      local _, u2 = P.stream_event(st, events[2])
      assert.are.equal(3, u2.completion_tokens)
    end)

    it("emits a mid-stream error as an OpenAI error and no [DONE]", function()
      local outs = S.run_stream(P, { { data = '{"error":{"code":503,"message":"overloaded","status":"UNAVAILABLE"}}' } }, target(), {})
      assert.are.equal(1, #outs)
      S.same_json({ error = { message = "overloaded", type = "api_error", code = "UNAVAILABLE" } }, outs[1])
    end)

    it("reports a stream that ends without a finishReason as truncated", function()
      local events = S.sse("gemini_stream_text.sse")
      local outs = S.run_stream(P, { events[1] }, target(), {})
      assert.are.equal("upstream_truncated", outs[#outs].error.code)
    end)
  end)

  describe("embeddings", function()
    it("sends batchEmbedContents, one request per input", function()
      local r = assert(P.embeddings_request({ model = "emb-public", input = { "a", "bb" }, dimensions = 3 },
        target({ model = "text-embedding-004" })))
      assert.are.equal("/v1beta/models/text-embedding-004:batchEmbedContents", r.path)
      assert.are.equal("AIza-secret", r.headers["x-goog-api-key"])
      S.same_json({ requests = {
        { model = "models/text-embedding-004", content = { parts = { { text = "a" } } }, outputDimensionality = 3 },
        { model = "models/text-embedding-004", content = { parts = { { text = "bb" } } }, outputDimensionality = 3 } } }, r.body)
      assert.are.equal(1, r.prompt_tokens_estimate)
    end)

    it("answers in the OpenAI list shape with an estimated usage", function()
      local body, usage = P.embeddings_response(200, S.read("gemini_embed_response.json"),
        target({ public_model = "emb-public", prompt_tokens_estimate = 4 }))
      S.same_json({ object = "list", model = "emb-public",
        data = { { object = "embedding", index = 0, embedding = { 0.1, 0.2, 0.3 } },
                 { object = "embedding", index = 1, embedding = { 0.4, 0.5, 0.6 } } },
        usage = { prompt_tokens = 4, total_tokens = 4 } }, body)
      assert.are.equal("estimated", usage.source)
    end)

    it("refuses token arrays by name", function()
      local _, e1 = P.embeddings_request({ input = { { 1, 2 } } }, target())
      assert.are.equal("token-array embeddings input is not supported by the gemini provider", e1.message)
      local _, e2 = P.embeddings_request({ input = "x", encoding_format = "int8" }, target())
      assert.are.equal("encoding_format 'int8' is not supported by the gemini provider", e2.message)
    end)

    it("answers base64 embeddings as OpenAI encodes them (float32, little-endian)", function()
      -- OpenAI's SDKs ask for base64 by default; Gemini only answers floats
      local t = target()
      assert.is_not_nil(P.embeddings_request({ input = "x", encoding_format = "base64" }, t))
      local body = P.embeddings_response(200, { embeddings = { { values = { 1, -2, 0.5 } } } }, t)
      -- 1.0 = 00 00 80 3f, -2.0 = 00 00 00 c0, 0.5 = 00 00 00 3f
      assert.are.equal(require("sluice.hash").base64_encode("\0\0\128\63\0\0\0\192\0\0\0\63"),
                       body.data[1].embedding)
    end)
  end)
end)
