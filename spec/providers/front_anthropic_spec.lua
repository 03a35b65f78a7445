-- front_anthropic_spec.lua — the Anthropic Messages front door
-- (lua/sluice/front/anthropic.lua): Messages requests to the internal
-- OpenAI form, answers and streams back as Messages, errors as Anthropic's.
local json = require "sluice.json"
local S = require "spec.fixtures.providers.support"
local F = require "sluice.front.anthropic"
local anthropic = require "sluice.providers.anthropic"

describe("anthropic front door", function()
  describe("to_internal", function()
    it("translates system, images, tool_use, tool_result and options (golden)", function()
      local r = assert(F.to_internal(S.json("anthropic_front_request.json")))
      S.same_json(S.json("anthropic_front_request.expected.json"), r)
    end)

    it("keeps a plain string conversation as strings", function()
      local r = assert(F.to_internal({ model = "m", max_tokens = 5, system = "sys",
        messages = { { role = "user", content = "hi" }, { role = "assistant", content = "yo" } } }))
      S.same_json({ model = "m", max_tokens = 5, messages = {
        { role = "system", content = "sys" }, { role = "user", content = "hi" },
        { role = "assistant", content = "yo" } } }, r)
    end)

    it("maps tool_choice auto, none and a named tool", function()
      local function tc(choice)
        return assert(F.to_internal({ model = "m", max_tokens = 1, messages = { { role = "user", content = "x" } },
          tool_choice = choice })).tool_choice
      end
      assert.are.equal("auto", tc({ type = "auto" }))
      assert.are.equal("none", tc({ type = "none" }))
      S.same_json({ type = "function", ["function"] = { name = "f" } }, tc({ type = "tool", name = "f" }))
    end)

    it("maps an image url source and drops thinking blocks from history", function()
      local r = assert(F.to_internal({ model = "m", max_tokens = 1, messages = {
        { role = "user", content = { { type = "image", source = { type = "url", url = "https://x/a.png" } } } },
        { role = "assistant", content = { { type = "thinking", thinking = "hmm", signature = "s" }, { type = "text", text = "ok" } } } } }))
      S.same_json({ { type = "image_url", image_url = { url = "https://x/a.png" } } }, r.messages[1].content)
      assert.are.equal("ok", r.messages[2].content)
    end)

    it("round-trips through the anthropic provider to the same Messages request", function()
      local req = S.json("anthropic_front_request.json")
      local internal = assert(F.to_internal(req))
      local out = assert(anthropic.chat_request(internal, { model = "claude-public" }))
      local b = out.body
      assert.are.equal("Be brief.", b.system)
      assert.are.equal(512, b.max_tokens)
      S.same_json({ type = "any", disable_parallel_tool_use = true }, b.tool_choice)
      S.same_json({ "END" }, b.stop_sequences)
      S.same_json({ user_id = "u-7" }, b.metadata)
      S.same_json(req.messages[2].content, b.messages[2].content)
      S.same_json({ { type = "tool_result", tool_use_id = "toolu_1", content = "21C" }, { type = "text", text = "Thanks" } },
        b.messages[3].content)
      assert.is_false(out.strip_usage_chunk)
    end)

    describe("refuses what the internal form cannot carry, by name", function()
      local base = function(extra)
        local req = { model = "m", max_tokens = 1, messages = { { role = "user", content = "x" } } }
        for k, v in pairs(extra) do req[k] = v end
        return req
      end
      local cases = {
        { { top_k = 5 }, "top_k is not supported by sluice's Anthropic Messages front door" },
        { { thinking = { type = "enabled", budget_tokens = 1024 } },
          "extended thinking is not supported by sluice's Anthropic Messages front door" },
        { { tools = { { type = "web_search_20250305", name = "web_search" } } },
          "the server tool 'web_search_20250305' is not supported by sluice's Anthropic Messages front door" },
        { { messages = { { role = "user", content = { { type = "document", source = {} } } } } },
          "a document content block is not supported by sluice's Anthropic Messages front door" },
        { { mcp_servers = {} }, "the field 'mcp_servers' is not supported by sluice's Anthropic Messages front door" },
      }
      for _, c in ipairs(cases) do
        it(c[2], function()
          local r, err = F.to_internal(base(c[1]))
          assert.is_nil(r)
          assert.are.same({ status = 400, code = "unsupported_feature", message = c[2] }, err)
        end)
      end
    end)

    it("accepts thinking that is disabled", function()
      assert.is_table(F.to_internal({ model = "m", max_tokens = 1, thinking = { type = "disabled" },
        messages = { { role = "user", content = "x" } } }))
    end)
  end)

  describe("from_internal", function()
    it("turns a chat completion with tool calls into a Messages response", function()
      local body = {
        id = "chatcmpl-1", object = "chat.completion", created = 1, model = "gpt-4o",
        choices = { { index = 0, finish_reason = "tool_calls", message = { role = "assistant", content = "Checking.",
          tool_calls = { { id = "call_1", type = "function", ["function"] = { name = "get_weather", arguments = '{"city":"Paris"}' } } } } } },
        usage = { prompt_tokens = 10, completion_tokens = 4, total_tokens = 14 },
      }
      S.same_json({
        id = "msg_chatcmpl-1", type = "message", role = "assistant", model = "claude-public",
        content = { { type = "text", text = "Checking." },
                    { type = "tool_use", id = "call_1", name = "get_weather", input = { city = "Paris" } } },
        stop_reason = "tool_use", stop_sequence = json.null,
        usage = { input_tokens = 10, output_tokens = 4 },
      }, F.from_internal(body, nil, "claude-public"))
    end)

    it("maps finish reasons to stop reasons and prefers the adapter's usage", function()
      local expect = { stop = "end_turn", length = "max_tokens", tool_calls = "tool_use", content_filter = "refusal" }
      for finish, stop in pairs(expect) do
        local r = F.from_internal({ id = "msg_x", model = "m", choices = { { message = { content = "x" }, finish_reason = finish } } },
          { prompt_tokens = 3, completion_tokens = 2 })
        assert.are.equal(stop, r.stop_reason, finish)
        assert.are.equal("msg_x", r.id)
        assert.are.same({ input_tokens = 3, output_tokens = 2 }, r.usage)
      end
    end)

    it("gives an empty content array for an empty answer", function()
      local r = F.from_internal({ id = "c", model = "m", choices = { { message = { content = json.null }, finish_reason = "stop" } } })
      assert.are.equal("[]", json.encode(r.content))
    end)
  end)

  describe("streaming", function()
    it("emits the Anthropic event sequence for text then a tool call (golden)", function()
      local st = F.stream_start({ model = "claude-public" })
      local events = {}
      for _, c in ipairs(S.jsonl("front_stream_chunks.jsonl")) do
        for _, e in ipairs(F.stream_chunk(st, c)) do events[#events + 1] = e end
      end
      for _, e in ipairs(F.stream_end(st)) do events[#events + 1] = e end
      local expected = S.jsonl("front_stream_events.expected.jsonl")
      assert.are.equal(#expected, #events)
      for i = 1, #expected do S.same_json(expected[i], events[i]) end
    end)

    it("takes the public model name alone as stream_start's argument", function()
      local st = F.stream_start("claude-public")
      local evs = F.stream_chunk(st, { id = "c", model = "gpt-4o", choices = { { index = 0, delta = { role = "assistant" } } } })
      assert.are.equal("claude-public", evs[1].data.message.model)
    end)

    it("closes the message from stream_end with the adapter's usage when [DONE] never came", function()
      local st = F.stream_start()
      F.stream_chunk(st, { id = "c", model = "m", choices = { { index = 0, delta = { content = "hi" } } } })
      local evs = F.stream_end(st, { prompt_tokens = 5, completion_tokens = 1 })
      local names = {}
      for i, e in ipairs(evs) do names[i] = e.event end
      assert.are.same({ "content_block_stop", "message_delta", "message_stop" }, names)
      assert.are.same({ input_tokens = 5, output_tokens = 1 }, evs[2].data.usage)
      assert.are.equal("end_turn", evs[2].data.delta.stop_reason)
      assert.are.same({}, F.stream_end(st))
    end)

    it("works end to end from an Anthropic backend stream", function()
      local pst = anthropic.stream_start({ model = "claude-x" }, { strip_usage_chunk = false })
      local fst = F.stream_start({ model = "claude-public" })
      local names, text = {}, {}
      for _, ev in ipairs(S.sse("anthropic_stream_text.sse")) do
        for _, c in ipairs((anthropic.stream_event(pst, ev))) do
          for _, e in ipairs(F.stream_chunk(fst, c)) do
            names[#names + 1] = e.event
            if e.event == "content_block_delta" then text[#text + 1] = e.data.delta.text end
            if e.event == "message_delta" then
              assert.are.same({ input_tokens = 30, output_tokens = 7 }, e.data.usage)
              assert.are.equal("end_turn", e.data.delta.stop_reason)
            end
          end
        end
      end
      assert.are.same({ "message_start", "content_block_start", "ping", "content_block_delta",
        "content_block_delta", "content_block_stop", "message_delta", "message_stop" }, names)
      assert.are.equal("Hello world", table.concat(text))
    end)

    it("turns a mid-stream error chunk into an error event and stops", function()
      local st = F.stream_start()
      local evs = F.stream_chunk(st, { error = { message = "Overloaded", type = "api_error", code = "overloaded_error" } })
      assert.are.equal(1, #evs)
      assert.are.equal("error", evs[1].event)
      assert.are.same({ type = "error", error = { type = "api_error", message = "Overloaded" } }, evs[1].data)
      assert.are.same({}, F.stream_chunk(st, "[DONE]"))
    end)
  end)

  describe("error", function()
    it("maps OpenAI errors and adapter errors to Anthropic's shape by status", function()
      assert.are.same({ type = "error", error = { type = "rate_limit_error", message = "slow down" } },
        F.error({ error = { message = "slow down", type = "rate_limit_error", code = "x" } }, 429))
      assert.are.same({ type = "error", error = { type = "invalid_request_error",
        message = "n > 1 is not supported by the anthropic provider" } },
        F.error({ status = 400, code = "unsupported_feature", message = "n > 1 is not supported by the anthropic provider" }))
      assert.are.same({ type = "error", error = { type = "not_found_error", message = "no model" } },
        F.error({ error = { message = "no model" } }, 404))
      assert.are.same({ type = "error", error = { type = "overloaded_error", message = "busy" } },
        F.error({ error = { message = "busy" } }, 503))
      assert.are.same({ type = "error", error = { type = "api_error", message = "x" } },
        F.error({ error = { message = "x" } }, 502))
    end)
  end)
end)
