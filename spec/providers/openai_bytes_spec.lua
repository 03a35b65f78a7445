-- openai_bytes_spec.lua — the OpenAI family's byte paths (the front door's
-- OpenAI → OpenAI fast path): request, answer and stream events are spliced
-- instead of decoded and re-encoded, and must read exactly as the table
-- path's output; whatever they cannot vouch for takes the table path.
local json = require "sluice.json"
local S = require "spec.fixtures.providers.support"
local openai = require "sluice.providers.openai"
local azure = require "sluice.providers.azure"
local compat = require "sluice.providers.openai_compat"

local function target(extra)
  local t = { model = "gpt-4o-2024-08-06", base_path = "/v1", public_model = "gpt-public" }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

-- The request through both paths: body_bytes must decode to the table the
-- table path sends.
local function both(P, raw, t)
  local bytes = assert(P.chat_request(assert(json.decode(raw)), t or target(), raw))
  local tbl = assert(P.chat_request(assert(json.decode(raw)), t or target()))
  assert.is_nil(tbl.body_bytes)
  return bytes, tbl
end

describe("openai family byte paths", function()
  describe("requests", function()
    it("splice the provider model into the client's bytes, the rest untouched", function()
      local raw = '{ "model" : "gpt-public", "messages":[{"role":"user","content":"model: \\"x\\""}],"temperature":0.2}'
      local r, tbl = both(openai, raw)
      assert.equals('{ "model" : "gpt-4o-2024-08-06", "messages":[{"role":"user","content":"model: \\"x\\""}],"temperature":0.2}',
        r.body_bytes)
      assert.equals(S.canon(tbl.body), S.canon(json.decode(r.body_bytes)))
    end)

    it("keep the bytes as they are when the model does not change", function()
      local raw = '{"model":"gpt-4o-2024-08-06","messages":[]}'
      local r = both(openai, raw)
      assert.equals(raw, r.body_bytes)
    end)

    it("add stream_options for a stream that did not ask for usage", function()
      local raw = '{"model":"m","stream":true,"messages":[]}'
      local r, tbl = both(openai, raw)
      assert.is_true(r.strip_usage_chunk)
      assert.equals(S.canon(tbl.body), S.canon(json.decode(r.body_bytes)))
      assert.is_true(json.decode(r.body_bytes).stream_options.include_usage)
    end)

    it("encode the table when the client's stream_options must be edited", function()
      local raw = '{"model":"m","stream":true,"stream_options":{"include_usage":false},"messages":[]}'
      local r = both(openai, raw)
      assert.is_nil(r.body_bytes)
      assert.is_true(r.body.stream_options.include_usage)
    end)

    it("encode the table for a body with a repeated key", function()
      local r = both(openai, '{"model":"a","messages":[],"model":"b"}')
      assert.is_nil(r.body_bytes)
    end)

    it("are not used by adapters that change more than the model", function()
      assert.is_nil(both(azure, '{"model":"m","messages":[]}', target({ base_path = "" })).body_bytes)
      assert.is_nil(both(compat, '{"model":"m","messages":[]}').body_bytes)
    end)
  end)

  describe("answers", function()
    local answer = '{"id":"c1","object":"chat.completion","model":"gpt-4o-2024-08-06",'
      .. '"choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],'
      .. '"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}'

    it("rename the model in the bytes and read the reported usage", function()
      local body, usage = openai.chat_response_bytes(200, answer, target())
      local doc, tusage = openai.chat_response(200, answer, target())
      assert.equals(S.canon(doc), S.canon(json.decode(body)))
      assert.same(tusage, usage)
      assert.equals(answer:gsub("gpt%-4o%-2024%-08%-06", "gpt-public"), body)
    end)

    it("leave answers without usage to the table path (the estimate reads choices)", function()
      assert.is_nil(openai.chat_response_bytes(200, answer:gsub(',"usage":%b{}', ""), target()))
      assert.is_nil(openai.chat_response_bytes(200, answer:gsub('"usage":%b{}', '"usage":null'), target()))
    end)

    it("leave answers that may carry safety results to the table path", function()
      assert.is_nil(openai.chat_response_bytes(200, answer:gsub('"stop"', '"content_filter"'), target()))
      assert.is_nil(openai.chat_response_bytes(200, answer:gsub('"stop"', '"content\\u005ffilter"'), target()))
      assert.is_nil(openai.chat_response_bytes(200, answer:gsub('^{', '{"prompt_filter_results":[],'), target()))
    end)

    it("leave answers with no model member, or not JSON, to the table path", function()
      assert.is_nil(openai.chat_response_bytes(200, answer:gsub('"model":"[^"]*",', ""), target()))
      assert.is_nil(openai.chat_response_bytes(200, "not json", target()))
    end)
  end)

  describe("stream events", function()
    local function chunk(extra)
      return '{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-2024-08-06",'
        .. '"choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":' .. (extra or "null") .. '}]}'
    end

    local function run(events, as_bytes)
      local st = openai.stream_start(target(), { strip_usage_chunk = true, prompt_tokens_estimate = 5 })
      local out, usage = {}, nil
      for _, data in ipairs(events) do
        local list, u = openai.stream_event(st, { data = data }, as_bytes)
        usage = u or usage
        for _, c in ipairs(list) do
          out[#out + 1] = type(c) == "string" and c or json.encode(c)
        end
      end
      local list, u = openai.stream_end(st)
      for _, c in ipairs(list) do out[#out + 1] = type(c) == "string" and c or json.encode(c) end
      return out, u or usage, st
    end

    it("pass chunks on as bytes with the model renamed, reading the same end and usage", function()
      local events = { chunk(), chunk('"stop"'),
        '{"id":"c1","object":"chat.completion.chunk","model":"x","choices":[],"usage":{"prompt_tokens":2,"completion_tokens":2,"total_tokens":4}}',
        "[DONE]" }
      local b, bu = run(events, true)
      local t, tu = run(events, false)
      assert.equals(#t, #b)
      for i = 1, #t do
        if t[i] == "[DONE]" then
          assert.equals("[DONE]", b[i])
        else
          assert.equals(S.canon(json.decode(t[i])), S.canon(json.decode(b[i])))
        end
      end
      assert.same(tu, bu)
      assert.equals(chunk():gsub("gpt%-4o%-2024%-08%-06", "gpt-public"), b[1])
    end)

    it("count generated text for the estimate when no usage comes", function()
      local events = { chunk(), chunk('"stop"') }
      local _, bu = run(events, true)
      local _, tu = run(events, false)
      assert.same(tu, bu)
      assert.equals("estimated", bu.source)
      local _, _, st = run({ chunk() }, true)
      assert.is_false(st.finished)
    end)

    it("take the table path for errors and safety results", function()
      local err = '{"error":{"message":"overloaded","type":"server_error"}}'
      local b = run({ err }, true)
      local t = run({ err }, false)
      assert.same(t, b)
      local filtered = chunk('"content_filter"')
      local st = openai.stream_start(target(), {})
      local list = openai.stream_event(st, { data = filtered }, true)
      assert.equals("table", type(list[1]))
    end)
  end)
end)
