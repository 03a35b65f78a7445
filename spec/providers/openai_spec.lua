-- openai_spec.lua — the OpenAI adapter (lua/sluice/providers/openai.lua and
-- the shared openai_family.lua): pass-through with the model renamed,
-- stream usage asked for and its extra chunk stripped, errors normalised.
local json = require "sluice.json"
local S = require "spec.fixtures.providers.support"
local P = require "sluice.providers.openai"

local function target(extra)
  local t = { model = "gpt-4o-2024-08-06", base_path = "/v1", credential = "sk-secret",
              public_model = "gpt-public", now = 1700000000 }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

describe("openai adapter", function()
  it("names itself and its family", function()
    assert.are.equal("openai", P.name)
    assert.are.equal("openai", P.family)
  end)

  describe("chat_request", function()
    it("returns the same body table with only the model changed", function()
      local req = S.json("openai_tools_request.json")
      local before = S.canon(req)
      local r = assert(P.chat_request(req, target()))
      assert.are.equal(req, r.body)
      assert.are.equal("gpt-4o-2024-08-06", r.body.model)
      r.body.model = "gpt-public"
      assert.are.equal(before, S.canon(r.body))
      assert.are.equal("POST", r.method)
      assert.are.equal("/chat/completions", r.path)
      assert.are.equal("Bearer sk-secret", r.headers.authorization)
      assert.is_false(r.stream)
      assert.is_false(r.strip_usage_chunk)
    end)

    it("adds /v1 when the backend URL has no path", function()
      local r = assert(P.chat_request({ messages = {} }, target({ base_path = "" })))
      assert.are.equal("/v1/chat/completions", r.path)
    end)

    it("sends no authorization header without a credential", function()
      local t = target()
      t.credential = nil
      local r = assert(P.chat_request({ messages = {} }, t))
      assert.is_nil(r.headers.authorization)
    end)

    it("asks a stream for usage and marks the usage chunk for stripping", function()
      local r = assert(P.chat_request({ stream = true, messages = {} }, target()))
      assert.is_true(r.stream)
      assert.is_true(r.body.stream_options.include_usage)
      assert.is_true(r.strip_usage_chunk)
    end)

    it("keeps the usage chunk when the client asked for it", function()
      local r = assert(P.chat_request({ stream = true, stream_options = { include_usage = true }, messages = {} }, target()))
      assert.is_false(r.strip_usage_chunk)
      local r2 = assert(P.chat_request({ stream = true, stream_options = { include_usage = false }, messages = {} }, target()))
      assert.is_true(r2.body.stream_options.include_usage)
      assert.is_true(r2.strip_usage_chunk)
    end)

    it("leaves stream_options alone on a backend told not to take them", function()
      local r = assert(P.chat_request({ stream = true, messages = {} }, target({ stream_usage = false })))
      assert.is_nil(r.body.stream_options)
      assert.is_false(r.strip_usage_chunk)
    end)

    it("refuses a body that is not an object", function()
      local r, err = P.chat_request("x", target())
      assert.is_nil(r)
      assert.are.equal("invalid_request", err.code)
    end)
  end)

  describe("chat_response", function()
    it("echoes the public model and reads reported usage", function()
      local body, usage = P.chat_response(200, S.read("openai_chat_response.json"), target())
      assert.are.equal("gpt-public", body.model)
      assert.are.equal("Hello!", body.choices[1].message.content)
      assert.are.equal(1700000002, body.created)
      assert.are.same({ prompt_tokens = 11, completion_tokens = 2, total_tokens = 13, source = "reported" }, usage)
    end)

    it("estimates usage when the body has none", function()
      local _, usage = P.chat_response(200, { choices = { { message = { content = "12345678",
        tool_calls = { { ["function"] = { arguments = "{}" } } } } } } }, target({ prompt_tokens_estimate = 5 }))
      assert.are.same({ prompt_tokens = 5, completion_tokens = 3, total_tokens = 8, source = "estimated" }, usage)
    end)

    it("reports a body that is not JSON", function()
      local body, err = P.chat_response(200, "oops", target())
      assert.is_nil(body)
      assert.are.same({ status = 502, code = "upstream_invalid_response",
        message = "the openai backend sent a response that is not JSON" }, err)
    end)
  end)

  describe("error_response", function()
    it("keeps an OpenAI error's message, type and code", function()
      S.same_json({ error = { message = "Rate limit reached for gpt-4o", type = "requests", code = "rate_limit_exceeded" } },
        P.error_response(429, S.read("openai_error_rate_limit.json")))
    end)

    it("fills a missing type from the status", function()
      S.same_json({ error = { message = "no", type = "authentication_error", code = json.null } },
        P.error_response(401, '{"error":{"message":"no"}}'))
    end)

    it("reads the string form some servers use", function()
      S.same_json({ error = { message = "model not found", type = "not_found_error", code = "upstream_error" } },
        P.error_response(404, '{"error":"model not found"}'))
    end)

    it("describes an unreadable body by status", function()
      S.same_json({ error = { message = "the openai backend returned HTTP 503", type = "api_error", code = "upstream_error" } },
        P.error_response(503, "<html>busy</html>"))
    end)
  end)

  describe("streaming", function()
    it("consumes the usage-only chunk it asked for and returns its usage", function()
      local outs, usage = S.run_stream(P, S.sse("openai_stream.sse"), target(), { strip_usage_chunk = true })
      assert.are.equal(4, #outs)
      assert.are.equal("", outs[1].choices[1].delta.content)
      assert.are.equal("Hi there", outs[2].choices[1].delta.content)
      assert.are.equal("stop", outs[3].choices[1].finish_reason)
      assert.are.equal("[DONE]", outs[4])
      for i = 1, 3 do assert.are.equal("gpt-public", outs[i].model) end
      assert.are.same({ prompt_tokens = 9, completion_tokens = 3, total_tokens = 12, source = "reported" }, usage)
    end)

    it("passes the usage chunk through when the client asked", function()
      local outs = S.run_stream(P, S.sse("openai_stream.sse"), target(), { strip_usage_chunk = false })
      assert.are.equal(5, #outs)
      assert.are.equal(12, outs[4].usage.total_tokens)
      assert.are.equal("[]", json.encode(outs[4].choices))
    end)

    it("returns usage as the second value of the event that carried it", function()
      local st = P.stream_start(target(), { strip_usage_chunk = true })
      local events = S.sse("openai_stream.sse")
      for i = 1, 3 do
        local _, u = P.stream_event(st, events[i])
        assert.is_nil(u)
      end
      local outs, u = P.stream_event(st, events[4])
      assert.are.same({}, outs)
      assert.are.equal(12, u.total_tokens)
      assert.are.same({ "[DONE]" }, (P.stream_event(st, events[5])))
      local final, fu = P.stream_end(st)
      assert.are.same({}, final)
      assert.are.equal(u, fu)
    end)

    it("strips usage riding on a content chunk but keeps the content", function()
      local st = P.stream_start(target(), { strip_usage_chunk = true })
      local outs, u = P.stream_event(st, { data = '{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}' })
      assert.are.equal(1, #outs)
      assert.is_nil(outs[1].usage)
      assert.are.equal(2, u.total_tokens)
    end)

    it("adds [DONE] at the end when a finished stream lacked it", function()
      local events = S.sse("openai_stream.sse")
      local outs = S.run_stream(P, { events[1], events[2], events[3] }, target(), { strip_usage_chunk = true })
      assert.are.equal("[DONE]", outs[#outs])
    end)

    it("reports a stream that stopped before finishing as truncated, with estimated usage", function()
      local events = S.sse("openai_stream.sse")
      local outs, usage = S.run_stream(P, { events[1], events[2] }, target(), { strip_usage_chunk = true, prompt_tokens_estimate = 4 })
      S.same_json({ error = { message = "the openai backend ended the stream before it finished",
        type = "api_error", code = "upstream_truncated" } }, outs[#outs])
      assert.are.same({ prompt_tokens = 4, completion_tokens = 2, total_tokens = 6, source = "estimated" }, usage)
    end)

    it("passes a mid-stream error on in the OpenAI shape", function()
      local outs = S.run_stream(P, { { data = '{"error":{"message":"boom","type":"server_error","code":null}}' } }, target(), {})
      assert.are.equal(1, #outs)
      S.same_json({ error = { message = "boom", type = "server_error", code = json.null } }, outs[1])
    end)

    it("does not send [DONE] twice", function()
      local st = P.stream_start(target())
      assert.are.same({ "[DONE]" }, (P.stream_event(st, { data = "[DONE]" })))
      assert.are.same({}, (P.stream_event(st, { data = "[DONE]" })))
    end)
  end)

  describe("embeddings", function()
    it("passes the request on with the provider model", function()
      local req = { model = "emb-public", input = { "ab", "cdef" } }
      local r = assert(P.embeddings_request(req, target({ model = "text-embedding-3-small" })))
      assert.are.equal(req, r.body)
      assert.are.equal("text-embedding-3-small", req.model)
      assert.are.equal("/embeddings", r.path)
      assert.are.equal(2, r.prompt_tokens_estimate)
    end)

    it("echoes the public model and reads prompt usage", function()
      local body, usage = P.embeddings_response(200,
        '{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":5,"total_tokens":5}}',
        target({ public_model = "emb-public" }))
      assert.are.equal("emb-public", body.model)
      assert.are.same({ prompt_tokens = 5, completion_tokens = 0, total_tokens = 5, source = "reported" }, usage)
    end)
  end)
end)
