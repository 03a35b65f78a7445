-- End-to-end: the shipped mock speaks every provider API sluice adapts to —
-- OpenAI (chat, tools, embeddings), Azure OpenAI, Anthropic Messages and
-- Gemini — whole and streamed, refuses calls without the provider's
-- credential, fails on demand in each provider's own error shape, and
-- records what it received. Driven directly over HTTP, no gateway.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"
local json = require "sluice.json"

local WEATHER_TOOL = '{"type":"function","function":{"name":"get_weather",'
  .. '"description":"Weather in a city","parameters":{"type":"object",'
  .. '"properties":{"location":{"type":"string"}},"required":["location"]}}}'

describe("mock provider APIs", function()
  local mock

  setup(function()
    mock = proc.mock()
  end)

  teardown(function()
    proc.stop_all()
  end)

  local function post(path, body, headers)
    local h = { ["content-type"] = "application/json" }
    for k, v in pairs(headers or {}) do h[k] = v end
    return assert(http.request(mock.port, { method = "POST", path = path,
      headers = h, body = body }))
  end

  local function decode(res)
    local ok, v = pcall(json.decode, res.body)
    assert(ok and type(v) == "table", "not JSON: " .. tostring(res.body))
    return v
  end

  -- SSE blocks of a whole body: { event = name or nil, data = text }.
  local function sse(body)
    local out = {}
    for block in body:gmatch("(.-)\n\n") do
      out[#out + 1] = { event = block:match("^event: ([^\n]+)"),
        data = block:match("data: ([^\n]*)") }
    end
    return out
  end

  local function openai_chat(extra, headers)
    return post("/v1/chat/completions",
      '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi there"}]'
        .. (extra or "") .. "}", headers)
  end

  local AZ = "/openai/deployments/prod-gpt4o"
  local AZ_Q = "?api-version=2024-06-01"
  local AZ_KEY = { ["api-key"] = "az-key" }
  local ANTH = { ["x-api-key"] = "sk-ant-test", ["anthropic-version"] = "2023-06-01" }
  local ANTH_BODY = '{"model":"claude-3-5-sonnet","max_tokens":64,'
    .. '"messages":[{"role":"user","content":"hi there"}]'
  local GEM = "/v1beta/models/gemini-1.5-flash"
  local GEM_KEY = { ["x-goog-api-key"] = "gem-key" }
  local GEM_BODY = '{"contents":[{"role":"user","parts":[{"text":"hi there"}]}]'

  describe("OpenAI", function()
    it("answers a chat completion with usage from the prompt text", function()
      local res = openai_chat()
      assert.are.equal(200, res.status)
      local j = decode(res)
      assert.are.equal("chatcmpl-mock", j.id)
      assert.are.equal("chat.completion", j.object)
      assert.are.equal("gpt-4o-mini", j.model)
      assert.are.equal("assistant", j.choices[1].message.role)
      assert.are.equal("Hello from the sluice mock provider.", j.choices[1].message.content)
      assert.are.equal("stop", j.choices[1].finish_reason)
      -- "hi there" is 8 bytes: ceil(8 / 4) = 2
      assert.are.same({ prompt_tokens = 2, completion_tokens = 7, total_tokens = 9 }, j.usage)
    end)

    it("accepts calls without credentials unless asked to check them", function()
      assert.are.equal(200, openai_chat().status)
      local res = openai_chat(nil, { ["x-mock-require-auth"] = "1" })
      assert.are.equal(401, res.status)
      local e = decode(res).error
      assert.are.equal("invalid_request_error", e.type)
      assert.are.equal("invalid_api_key", e.code)
      assert.are.equal(200, openai_chat(nil, { ["x-mock-require-auth"] = "1",
        authorization = "Bearer sk-test" }).status)
    end)

    it("streams role, one chunk per word, stop, usage and [DONE]", function()
      local res = openai_chat(',"stream":true,"stream_options":{"include_usage":true}',
        { ["x-mock-chunks"] = "3" })
      assert.are.equal(200, res.status)
      assert.are.equal("text/event-stream", res.headers["content-type"])
      local ev = sse(res.body)
      assert.are.equal(7, #ev) -- role, 3 words, finish, usage, [DONE]
      assert.are.equal("assistant", json.decode(ev[1].data).choices[1].delta.role)
      local text = {}
      for i = 2, 4 do text[#text + 1] = json.decode(ev[i].data).choices[1].delta.content end
      assert.are.equal("Hello from the", table.concat(text))
      assert.are.equal("stop", json.decode(ev[5].data).choices[1].finish_reason)
      local usage = json.decode(ev[6].data).usage
      assert.are.same({ prompt_tokens = 2, completion_tokens = 3, total_tokens = 5 }, usage)
      assert.are.equal("[DONE]", ev[7].data)
    end)

    it("calls the first tool when the user speaks last", function()
      local res = openai_chat(',"tools":[' .. WEATHER_TOOL .. ']')
      assert.are.equal(200, res.status)
      local c = decode(res).choices[1]
      assert.are.equal("tool_calls", c.finish_reason)
      assert.are.equal(json.null, c.message.content)
      local call = c.message.tool_calls[1]
      assert.are.equal("call_mock", call.id)
      assert.are.equal("function", call.type)
      assert.are.equal("get_weather", call["function"].name)
      assert.are.same({ location = "Paris" }, json.decode(call["function"].arguments))
    end)

    it("streams a tool call as argument deltas", function()
      local res = openai_chat(',"stream":true,"tools":[' .. WEATHER_TOOL .. ']')
      local ev = sse(res.body)
      local first = json.decode(ev[1].data).choices[1].delta.tool_calls[1]
      assert.are.equal("get_weather", first["function"].name)
      assert.are.equal("call_mock", first.id)
      local args = {}
      for i = 2, #ev - 2 do
        args[#args + 1] = json.decode(ev[i].data).choices[1].delta.tool_calls[1]["function"].arguments
      end
      assert.are.same({ location = "Paris" }, json.decode(table.concat(args)))
      assert.are.equal("tool_calls", json.decode(ev[#ev - 1].data).choices[1].finish_reason)
      assert.are.equal("[DONE]", ev[#ev].data)
    end)

    it("answers with text once the tool result is in", function()
      local res = post("/v1/chat/completions", '{"model":"gpt-4o","tools":['
        .. WEATHER_TOOL .. '],"messages":[{"role":"user","content":"weather?"},'
        .. '{"role":"assistant","content":null,"tool_calls":[{"id":"call_mock",'
        .. '"type":"function","function":{"name":"get_weather","arguments":"{}"}}]},'
        .. '{"role":"tool","tool_call_id":"call_mock","content":"sunny"}]}')
      local c = decode(res).choices[1]
      assert.are.equal("stop", c.finish_reason)
      assert.are.equal("Hello from the sluice mock provider.", c.message.content)
    end)

    it("embeds a string and an array of strings deterministically", function()
      local one = decode(post("/v1/embeddings",
        '{"model":"text-embedding-3-small","input":"hello world"}'))
      assert.are.equal("list", one.object)
      assert.are.equal("text-embedding-3-small", one.model)
      assert.are.equal(1, #one.data)
      assert.are.equal("embedding", one.data[1].object)
      assert.are.equal(0, one.data[1].index)
      assert.are.equal(8, #one.data[1].embedding)
      assert.are.same({ prompt_tokens = 3, total_tokens = 3 }, one.usage) -- 11 bytes
      local many = decode(post("/v1/embeddings",
        '{"model":"text-embedding-3-small","input":["hello world","other"]}'))
      assert.are.equal(2, #many.data)
      assert.are.equal(1, many.data[2].index)
      assert.are.same(one.data[1].embedding, many.data[1].embedding)
      assert.are_not.same(many.data[1].embedding, many.data[2].embedding)
      for _, v in ipairs(many.data[2].embedding) do
        assert.is_true(type(v) == "number" and v >= -1 and v <= 1)
      end
      local bad = post("/v1/embeddings", '{"model":"m","input":{"no":1}}')
      assert.are.equal(400, bad.status)
      assert.are.equal("invalid_request_error", decode(bad).error.type)
    end)
  end)

  describe("Azure OpenAI", function()
    it("answers as the deployment with content filter results", function()
      local res = post(AZ .. "/chat/completions" .. AZ_Q,
        '{"messages":[{"role":"user","content":"hi there"}]}', AZ_KEY)
      assert.are.equal(200, res.status)
      local j = decode(res)
      assert.are.equal("prod-gpt4o", j.model)
      assert.are.equal("chat.completion", j.object)
      assert.are.equal(0, j.prompt_filter_results[1].prompt_index)
      local pf = j.prompt_filter_results[1].content_filter_results
      assert.are.same({ filtered = false, severity = "safe" }, pf.hate)
      assert.are.same({ filtered = false, severity = "safe" },
        j.choices[1].content_filter_results.violence)
      assert.are.equal("Hello from the sluice mock provider.", j.choices[1].message.content)
      assert.are.equal(2, j.usage.prompt_tokens)
    end)

    it("requires api-version and api-key, in Azure's error shape", function()
      local res = post(AZ .. "/chat/completions", '{"messages":[]}', AZ_KEY)
      assert.are.equal(400, res.status)
      local e = decode(res).error
      assert.are.equal("MissingApiVersionParameter", e.code)
      assert.is_truthy(e.message:find("api-version", 1, true))
      res = post(AZ .. "/chat/completions" .. AZ_Q, '{"messages":[]}')
      assert.are.equal(401, res.status)
      assert.are.equal("401", decode(res).error.code)
    end)

    it("streams prompt filter results first, then filtered content", function()
      local res = post(AZ .. "/chat/completions" .. AZ_Q,
        '{"stream":true,"messages":[{"role":"user","content":"hi"}]}',
        { ["api-key"] = "k", ["x-mock-chunks"] = "2" })
      assert.are.equal(200, res.status)
      local ev = sse(res.body)
      local first = json.decode(ev[1].data)
      assert.are.equal(0, #first.choices)
      assert.is_truthy(first.prompt_filter_results[1].content_filter_results)
      local piece = json.decode(ev[3].data)
      assert.are.equal("Hello", piece.choices[1].delta.content)
      assert.are.equal("prod-gpt4o", piece.model)
      assert.is_false(piece.choices[1].content_filter_results.sexual.filtered)
      assert.are.equal("[DONE]", ev[#ev].data)
    end)

    it("embeds through a deployment", function()
      local res = post(AZ .. "/embeddings" .. AZ_Q, '{"input":["a","b","c"]}', AZ_KEY)
      local j = decode(res)
      assert.are.equal("prod-gpt4o", j.model)
      assert.are.equal(3, #j.data)
    end)

    it("fails on demand with Azure's error shape and Retry-After", function()
      local res = post(AZ .. "/chat/completions" .. AZ_Q, '{"messages":[]}',
        { ["api-key"] = "k", ["x-mock-status"] = "429", ["x-mock-retry-after"] = "3" })
      assert.are.equal(429, res.status)
      assert.are.equal("3", res.headers["retry-after"])
      assert.are.equal("429", decode(res).error.code)
    end)
  end)

  describe("Anthropic Messages", function()
    it("requires x-api-key and anthropic-version, in Anthropic's error shape", function()
      local res = post("/v1/messages", ANTH_BODY .. "}", { ["anthropic-version"] = "2023-06-01" })
      assert.are.equal(401, res.status)
      local j = decode(res)
      assert.are.equal("error", j.type)
      assert.are.equal("authentication_error", j.error.type)
      res = post("/v1/messages", ANTH_BODY .. "}", { ["x-api-key"] = "k" })
      assert.are.equal(400, res.status)
      j = decode(res)
      assert.are.equal("invalid_request_error", j.error.type)
      assert.is_truthy(j.error.message:find("anthropic-version", 1, true))
    end)

    it("answers a message with a text block and usage", function()
      local res = post("/v1/messages", ANTH_BODY .. "}", ANTH)
      assert.are.equal(200, res.status)
      local j = decode(res)
      assert.are.equal("msg_mock", j.id)
      assert.are.equal("message", j.type)
      assert.are.equal("assistant", j.role)
      assert.are.equal("claude-3-5-sonnet", j.model)
      assert.are.same({ { type = "text", text = "Hello from the sluice mock provider." } }, j.content)
      assert.are.equal("end_turn", j.stop_reason)
      assert.are.equal(json.null, j.stop_sequence)
      assert.are.same({ input_tokens = 2, output_tokens = 7 }, j.usage)
    end)

    it("streams the real event sequence, one text delta per piece", function()
      local res = post("/v1/messages", ANTH_BODY .. ',"stream":true}',
        { ["x-api-key"] = "k", ["anthropic-version"] = "2023-06-01", ["x-mock-chunks"] = "3" })
      assert.are.equal(200, res.status)
      assert.are.equal("text/event-stream", res.headers["content-type"])
      local ev = sse(res.body)
      local names = {}
      for i, e in ipairs(ev) do
        names[i] = e.event
        assert.are.equal(e.event, json.decode(e.data).type) -- event name = data type
      end
      assert.are.same({ "message_start", "content_block_start", "ping",
        "content_block_delta", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop" }, names)
      local start = json.decode(ev[1].data).message
      assert.are.equal(2, start.usage.input_tokens)
      assert.are.equal("text", json.decode(ev[2].data).content_block.type)
      local text = {}
      for i = 4, 6 do
        local d = json.decode(ev[i].data).delta
        assert.are.equal("text_delta", d.type)
        text[#text + 1] = d.text
      end
      assert.are.equal("Hello from the", table.concat(text))
      local md = json.decode(ev[8].data)
      assert.are.equal("end_turn", md.delta.stop_reason)
      assert.are.equal(3, md.usage.output_tokens)
    end)

    it("paces stream events by x-mock-chunk-delay-ms", function()
      local c = assert(http.connect(mock.port))
      local body = ANTH_BODY .. ',"stream":true}'
      assert(c:send(http.request_bytes({ method = "POST", path = "/v1/messages",
        headers = { ["x-api-key"] = "k", ["anthropic-version"] = "1",
          ["x-mock-chunks"] = "3", ["x-mock-chunk-delay-ms"] = "80" }, body = body })))
      local res = assert(c:read_head())
      local events = c:read_sse(res)
      c:close()
      assert.is_true(res.complete)
      assert.are.equal(9, #events)
      assert.is_true(events[#events].t - events[1].t >= 0.2,
        "events came within " .. (events[#events].t - events[1].t) .. "s")
    end)

    it("answers with a tool_use block, streamed as input_json deltas", function()
      local tools = ',"tools":[{"name":"get_weather","description":"w",'
        .. '"input_schema":{"type":"object","properties":{"location":{"type":"string"}}}}]'
      local j = decode(post("/v1/messages", ANTH_BODY .. tools .. "}", ANTH))
      assert.are.equal("tool_use", j.stop_reason)
      assert.are.equal("tool_use", j.content[1].type)
      assert.are.equal("toolu_mock", j.content[1].id)
      assert.are.equal("get_weather", j.content[1].name)
      assert.are.same({ location = "Paris" }, j.content[1].input)
      local ev = sse(post("/v1/messages", ANTH_BODY .. tools .. ',"stream":true}', ANTH).body)
      local block = json.decode(ev[2].data).content_block
      assert.are.equal("tool_use", block.type)
      assert.are.equal("get_weather", block.name)
      local parts = {}
      for _, e in ipairs(ev) do
        if e.event == "content_block_delta" then
          local d = json.decode(e.data).delta
          assert.are.equal("input_json_delta", d.type)
          parts[#parts + 1] = d.partial_json
        end
      end
      assert.are.same({ location = "Paris" }, json.decode(table.concat(parts)))
      assert.are.equal("tool_use", json.decode(ev[#ev - 1].data).delta.stop_reason)
      assert.are.equal("message_stop", ev[#ev].event)
      -- after the tool result, text again
      local after = decode(post("/v1/messages", '{"model":"c","max_tokens":9' .. tools
        .. ',"messages":[{"role":"user","content":"weather?"},{"role":"assistant",'
        .. '"content":[{"type":"tool_use","id":"toolu_mock","name":"get_weather","input":{}}]},'
        .. '{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_mock",'
        .. '"content":"sunny"}]}]}', ANTH))
      assert.are.equal("end_turn", after.stop_reason)
      assert.are.equal("text", after.content[1].type)
    end)

    it("fails on demand in Anthropic's error shape", function()
      local cases = { ["429"] = "rate_limit_error", ["529"] = "overloaded_error",
        ["500"] = "api_error" }
      for status, kind in pairs(cases) do
        local res = post("/v1/messages", ANTH_BODY .. "}",
          { ["x-api-key"] = "k", ["anthropic-version"] = "1", ["x-mock-status"] = status })
        assert.are.equal(tonumber(status), res.status)
        local j = decode(res)
        assert.are.equal("error", j.type)
        assert.are.equal(kind, j.error.type)
      end
    end)

    it("breaks a stream off mid-way on reset-mid-stream", function()
      local res = http.request(mock.port, { method = "POST", path = "/v1/messages",
        headers = { ["x-api-key"] = "k", ["anthropic-version"] = "1",
          ["x-mock-fault"] = "reset-mid-stream" }, body = ANTH_BODY .. ',"stream":true}' })
      assert.is_truthy(res)
      assert.is_false(res.complete)
      assert.is_truthy(res.body:find("event: message_start", 1, true))
      assert.is_nil(res.body:find("message_stop", 1, true))
    end)
  end)

  describe("Gemini", function()
    it("answers generateContent with candidates, safety ratings and usage", function()
      local res = post(GEM .. ":generateContent", GEM_BODY .. "}", GEM_KEY)
      assert.are.equal(200, res.status)
      local j = decode(res)
      local cand = j.candidates[1]
      assert.are.equal("Hello from the sluice mock provider.", cand.content.parts[1].text)
      assert.are.equal("model", cand.content.role)
      assert.are.equal("STOP", cand.finishReason)
      assert.are.equal(4, #cand.safetyRatings)
      assert.are.equal("NEGLIGIBLE", cand.safetyRatings[1].probability)
      assert.are.same({ promptTokenCount = 2, candidatesTokenCount = 7, totalTokenCount = 9 },
        j.usageMetadata)
      assert.are.equal("gemini-1.5-flash", j.modelVersion)
    end)

    it("takes the key as x-goog-api-key or ?key=, else 401 in Gemini's shape", function()
      assert.are.equal(200, post(GEM .. ":generateContent?key=abc", GEM_BODY .. "}").status)
      local res = post(GEM .. ":generateContent", GEM_BODY .. "}")
      assert.are.equal(401, res.status)
      local e = decode(res).error
      assert.are.equal(401, e.code)
      assert.are.equal("UNAUTHENTICATED", e.status)
      assert.are.equal("string", type(e.message))
    end)

    it("streams SSE chunks with alt=sse, the finish on the last", function()
      local res = post(GEM .. ":streamGenerateContent?alt=sse", GEM_BODY .. "}",
        { ["x-goog-api-key"] = "k", ["x-mock-chunks"] = "3" })
      assert.are.equal(200, res.status)
      assert.are.equal("text/event-stream", res.headers["content-type"])
      local ev = sse(res.body)
      assert.are.equal(3, #ev)
      local text = {}
      for i, e in ipairs(ev) do
        local c = json.decode(e.data).candidates[1]
        text[i] = c.content.parts[1].text
        if i < 3 then assert.is_nil(c.finishReason) end
      end
      assert.are.equal("Hello from the", table.concat(text))
      local last = json.decode(ev[3].data)
      assert.are.equal("STOP", last.candidates[1].finishReason)
      assert.are.equal(3, last.usageMetadata.candidatesTokenCount)
    end)

    it("streams one JSON array without alt=sse", function()
      local res = post(GEM .. ":streamGenerateContent", GEM_BODY .. "}",
        { ["x-goog-api-key"] = "k", ["x-mock-chunks"] = "2" })
      assert.are.equal(200, res.status)
      assert.are.equal("application/json", res.headers["content-type"])
      assert.are.equal("chunked", res.framing)
      local arr = decode(res)
      assert.are.equal(2, #arr)
      assert.are.equal(" from", arr[2].candidates[1].content.parts[1].text)
      assert.are.equal("STOP", arr[2].candidates[1].finishReason)
    end)

    it("calls a declared function, and answers text after its response", function()
      local tools = ',"tools":[{"functionDeclarations":[{"name":"get_weather",'
        .. '"parameters":{"type":"object","properties":{"location":{"type":"string"}}}}]}]'
      local j = decode(post(GEM .. ":generateContent", GEM_BODY .. tools .. "}", GEM_KEY))
      local part = j.candidates[1].content.parts[1]
      assert.are.equal("get_weather", part.functionCall.name)
      assert.are.same({ location = "Paris" }, part.functionCall.args)
      local after = decode(post(GEM .. ":generateContent", '{"contents":['
        .. '{"role":"user","parts":[{"text":"weather?"}]},'
        .. '{"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{}}}]},'
        .. '{"role":"user","parts":[{"functionResponse":{"name":"get_weather",'
        .. '"response":{"sky":"sunny"}}}]}]' .. tools .. "}", GEM_KEY))
      assert.are.equal("Hello from the sluice mock provider.",
        after.candidates[1].content.parts[1].text)
    end)

    it("fails on demand in Gemini's error shape", function()
      for status, name in pairs({ ["429"] = "RESOURCE_EXHAUSTED", ["503"] = "UNAVAILABLE",
        ["500"] = "INTERNAL" }) do
        local res = post(GEM .. ":generateContent", GEM_BODY .. "}",
          { ["x-goog-api-key"] = "k", ["x-mock-status"] = status })
        assert.are.equal(tonumber(status), res.status)
        local e = decode(res).error
        assert.are.equal(tonumber(status), e.code)
        assert.are.equal(name, e.status)
      end
      local res = post(GEM .. ":countTokens", GEM_BODY .. "}", GEM_KEY)
      assert.are.equal(404, res.status)
      assert.are.equal("NOT_FOUND", decode(res).error.status)
    end)

    it("sends a truncated body on garbage-body", function()
      local res = post(GEM .. ":generateContent", GEM_BODY .. "}",
        { ["x-goog-api-key"] = "k", ["x-mock-fault"] = "garbage-body" })
      assert.are.equal(200, res.status)
      local ok, v = pcall(json.decode, res.body)
      assert.is_true(not ok or v == nil, "decoded: " .. res.body)
      assert.is_truthy(res.body:find('"candidates"', 1, true))
    end)
  end)

  describe("the record of received requests", function()
    local function records()
      local res = assert(http.request(mock.port, { path = "/mock/requests" }))
      assert.are.equal(200, res.status)
      return decode(res)
    end

    local function clear()
      local res = assert(http.request(mock.port, { method = "DELETE", path = "/mock/requests" }))
      assert.are.equal(200, res.status)
    end

    it("keeps method, path with query, headers as received and body, newest last", function()
      clear()
      assert.are.same({}, records().requests)
      post(GEM .. ":generateContent?key=gem-secret", GEM_BODY .. "}")
      post("/v1/messages", ANTH_BODY .. "}", ANTH)
      assert(http.request(mock.port, { path = "/health" })) -- not recorded
      local list = records().requests
      assert.are.equal(2, #list)
      assert.are.equal("POST", list[1].method)
      assert.are.equal(GEM .. ":generateContent?key=gem-secret", list[1].path)
      assert.are.equal(GEM_BODY .. "}", list[1].body)
      assert.are.equal("/v1/messages", list[2].path)
      assert.is_true(list[2].seq > list[1].seq)
      local h = {}
      for _, pair in ipairs(list[2].headers) do h[pair[1]:lower()] = pair[2] end
      assert.are.equal("sk-ant-test", h["x-api-key"])
      assert.are.equal("2023-06-01", h["anthropic-version"])
      assert.are.equal(#(ANTH_BODY .. "}"), list[2].body_bytes)
    end)

    it("records refused calls too", function()
      clear()
      assert.are.equal(401, post("/v1/messages", ANTH_BODY .. "}").status)
      local list = records().requests
      assert.are.equal(1, #list)
      assert.are.equal("/v1/messages", list[1].path)
    end)

    it("keeps only the last 50", function()
      clear()
      for i = 1, 55 do
        post("/v1/chat/completions", '{"model":"m' .. i .. '","messages":[]}')
      end
      local list = records().requests
      assert.are.equal(50, #list)
      assert.are.equal('{"model":"m6","messages":[]}', list[1].body)
      assert.are.equal('{"model":"m55","messages":[]}', list[50].body)
    end)

    it("counts in /mock/stats without exposing anything recorded", function()
      post("/v1/messages", ANTH_BODY .. "}", ANTH)
      local res = assert(http.request(mock.port, { path = "/mock/stats" }))
      local j = decode(res)
      assert.is_true(j.recorded > 0)
      assert.is_nil(res.body:find("sk-ant-test", 1, true))
    end)
  end)
end)
