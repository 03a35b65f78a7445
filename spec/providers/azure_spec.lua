-- azure_spec.lua — the Azure OpenAI adapter (lua/sluice/providers/azure.lua):
-- deployment URLs, api-version, the api-key header, content-filter errors
-- and Azure's stream quirks (a prompt-filter chunk with no choices).
local S = require "spec.fixtures.providers.support"
local P = require "sluice.providers.azure"

local function target(extra)
  local t = { model = "gpt-4o", base_path = "", credential = "az-secret", api_version = "2024-10-21",
              public_model = "gpt-public" }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

describe("azure adapter", function()
  it("names itself and belongs to the openai family", function()
    assert.are.equal("azure", P.name)
    assert.are.equal("openai", P.family)
  end)

  it("puts the deployment in the path and the api-version in the query", function()
    local req = { model = "gpt-public", messages = { { role = "user", content = "hi" } } }
    local r = assert(P.chat_request(req, target({ deployment = "prod-4o" })))
    assert.are.equal("/openai/deployments/prod-4o/chat/completions", r.path)
    assert.are.same({ ["api-version"] = "2024-10-21" }, r.query)
    assert.are.equal("az-secret", r.headers["api-key"])
    assert.is_nil(r.headers.authorization)
    assert.are.equal(req, r.body)
    assert.is_nil(r.body.model)
  end)

  it("uses the model as the deployment and a default api-version", function()
    local r = assert(P.chat_request({ messages = {} }, target({ api_version = nil, base_path = "/openai" })))
    assert.are.equal("/deployments/gpt-4o/chat/completions", r.path)
    assert.are.same({ ["api-version"] = "2024-10-21" }, r.query)
  end)

  it("escapes a deployment name so it cannot change the path", function()
    local r = assert(P.chat_request({ messages = {} }, target({ deployment = "a/../b" })))
    assert.are.equal("/openai/deployments/a%2F..%2Fb/chat/completions", r.path)
  end)

  it("asks a stream for usage", function()
    local r = assert(P.chat_request({ stream = true, messages = {} }, target()))
    assert.is_true(r.body.stream_options.include_usage)
    assert.is_true(r.strip_usage_chunk)
  end)

  it("maps a content-filter error with its code", function()
    local e = P.error_response(400, S.read("azure_error_content_filter.json"))
    assert.are.equal("content_filter", e.error.code)
    assert.are.equal("invalid_request_error", e.error.type)
    assert.matches("content management policy", e.error.message, 1, true)
  end)

  it("passes the prompt-filter chunk, strips the usage chunk and reads usage", function()
    local outs, usage = S.run_stream(P, S.sse("azure_stream.sse"), target(), { strip_usage_chunk = true })
    assert.are.equal(5, #outs)
    assert.is_table(outs[1].prompt_filter_results)
    assert.are.equal("Bonjour", outs[3].choices[1].delta.content)
    assert.are.equal("stop", outs[4].choices[1].finish_reason)
    assert.are.equal("[DONE]", outs[5])
    assert.are.same({ prompt_tokens = 8, completion_tokens = 2, total_tokens = 10, source = "reported" }, usage)
  end)

  it("sends embeddings to the deployment", function()
    local r = assert(P.embeddings_request({ model = "emb", input = "x" }, target({ deployment = "emb-dep" })))
    assert.are.equal("/openai/deployments/emb-dep/embeddings", r.path)
    assert.are.same({ ["api-version"] = "2024-10-21" }, r.query)
    assert.is_nil(r.body.model)
  end)
end)
