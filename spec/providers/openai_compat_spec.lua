-- openai_compat_spec.lua — OpenAI-compatible servers (vLLM, Ollama, …) via
-- lua/sluice/providers/openai_compat.lua.
local S = require "spec.fixtures.providers.support"
local P = require "sluice.providers.openai_compat"

local function target(extra)
  local t = { model = "llama3.1:8b", base_path = "" }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

describe("openai_compat adapter", function()
  it("names itself and belongs to the openai family", function()
    assert.are.equal("openai_compat", P.name)
    assert.are.equal("openai", P.family)
  end)

  it("talks to /v1 on a bare server URL and to the given path otherwise", function()
    assert.are.equal("/v1/chat/completions", assert(P.chat_request({ messages = {} }, target())).path)
    assert.are.equal("/chat/completions",
      assert(P.chat_request({ messages = {} }, target({ base_path = "/v1beta/openai" }))).path)
  end)

  it("needs no credential, and sends one as a bearer token when given", function()
    assert.is_nil(assert(P.chat_request({ messages = {} }, target())).headers.authorization)
    assert.are.equal("Bearer k",
      assert(P.chat_request({ messages = {} }, target({ credential = "k" }))).headers.authorization)
  end)

  it("sends max_completion_tokens as max_tokens", function()
    local r = assert(P.chat_request({ max_completion_tokens = 9, messages = {} }, target()))
    assert.are.equal(9, r.body.max_tokens)
    assert.is_nil(r.body.max_completion_tokens)
    local r2 = assert(P.chat_request({ max_tokens = 5, max_completion_tokens = 9, messages = {} }, target()))
    assert.are.equal(5, r2.body.max_tokens)
  end)

  it("sets the provider model and asks for stream usage", function()
    local r = assert(P.chat_request({ model = "public", stream = true, messages = {} }, target()))
    assert.are.equal("llama3.1:8b", r.body.model)
    assert.is_true(r.body.stream_options.include_usage)
    assert.is_true(r.strip_usage_chunk)
  end)

  it("estimates usage at the end of a stream from a server that reports none", function()
    local st = P.stream_start(target({ stream_usage = false }), { strip_usage_chunk = false, prompt_tokens_estimate = 3 })
    P.stream_event(st, { data = '{"choices":[{"index":0,"delta":{"content":"12345678"},"finish_reason":null}]}' })
    P.stream_event(st, { data = '{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}' })
    local outs, u = P.stream_end(st)
    assert.are.same({ "[DONE]" }, outs)
    assert.are.same({ prompt_tokens = 3, completion_tokens = 2, total_tokens = 5, source = "estimated" }, u)
  end)

  it("maps Ollama's string errors", function()
    S.same_json({ error = { message = "model 'x' not found", type = "not_found_error", code = "upstream_error" } },
      P.error_response(404, '{"error":"model \'x\' not found"}'))
  end)
end)
