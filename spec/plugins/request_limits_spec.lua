-- request_limits_spec.lua — behaviour of the request-limits plugin through
-- the real runtime: required headers, body size, message count, the prompt
-- token estimate, the completion cap (clamp, reject, default), stripped
-- client headers, and limits chosen per team and per consumer.
-- Run from the repository root: ./build/sluice spec spec/plugins/request_limits_spec.lua
local t = require "sluice.test"
local json = require "sluice.json"

local CONSUMER = "spec/fixtures/limits/limits-consumer.lua"

local function chain(config)
  t.plugin_dirs = { "plugins" }
  return t.chain({ { name = "limits-consumer", path = CONSUMER },
                   { name = "request-limits", config = config } })
end

local function chat(c, body, headers, path)
  body = body or {}
  body.model = body.model or "mock-model"
  body.messages = body.messages or { { role = "user", content = "hi" } }
  return t.request(c, { path = path, headers = headers, json = body })
end

local function sent_body(res)
  return res.body and json.decode(res.body) or nil
end

local function decisions(res, outcome)
  local out = {}
  for _, d in ipairs(t.decisions(res.ctx)) do
    if d.plugin == "request-limits" and (not outcome or d.outcome == outcome) then
      out[#out + 1] = d
    end
  end
  return out
end

local function annotations(c, res)
  local _, audit = t.log(c, res.ctx, { status = 200 })
  return (audit.annotations or {})["request-limits"] or {}
end

local function messages(n, text)
  local list = {}
  for i = 1, n do list[i] = { role = i % 2 == 1 and "user" or "assistant", content = text or "hi" } end
  return list
end

describe("request-limits plugin", function()
  describe("required headers", function()
    local c = chain({ global = { required_headers = { "X-Owning-Team" } }, strip_headers = {} })

    it("refuses a request without one with 400 naming the header", function()
      local res = chat(c)
      assert.equals("deny", res.action)
      assert.equals(400, res.status)
      assert.equals("missing_header", res.code)
      assert.equals("the header 'x-owning-team' is required by policy", res.message)
    end)

    it("refuses an empty value", function()
      assert.equals("deny", chat(c, nil, { ["x-owning-team"] = "  " }).action)
    end)

    it("lets a request carrying it through untouched", function()
      local res = chat(c, nil, { ["x-owning-team"] = "search" })
      assert.equals("ok", res.action)
      assert.is_nil(res.body)
      assert.is_nil(res.headers)
    end)
  end)

  describe("body size", function()
    local c = chain({ global = { max_body_bytes = 200 } })

    it("refuses a body over the limit with 413 request_too_large", function()
      local res = chat(c, { messages = { { role = "user", content = ("x"):rep(300) } } })
      assert.equals("deny", res.action)
      assert.equals(413, res.status)
      assert.equals("request_too_large", res.code)
      assert.matches("the limit is 200", res.message, 1, true)
    end)

    it("lets a body at the limit through", function()
      local body = json.encode({ model = "m", messages = messages(1) })
      local pad = ("x"):rep(200 - #body)
      local res = t.request(c, { body = json.encode({ model = "m" .. pad, messages = messages(1) }) })
      assert.equals("ok", res.action)
    end)
  end)

  describe("message count", function()
    local c = chain({ global = { max_messages = 3 } })

    it("refuses more messages than allowed with 400 too_many_messages", function()
      local res = chat(c, { messages = messages(4) })
      assert.equals(400, res.status)
      assert.equals("too_many_messages", res.code)
      assert.equals("the request has 4 messages; the limit is 3", res.message)
    end)

    it("allows exactly the limit", function()
      assert.equals("ok", chat(c, { messages = messages(3) }).action)
    end)
  end)

  describe("prompt tokens", function()
    -- estimate: ceil(characters / 4) + 4 per message
    it("estimates characters / 4 rounded up plus 4 a message, and records it", function()
      local c = chain({ global = { max_prompt_tokens = 1000 } })
      local res = chat(c, { messages = { { role = "system", content = ("a"):rep(10) },
                                         { role = "user", content = ("b"):rep(31) } } })
      assert.equals("ok", res.action)
      -- 41 characters -> 11 tokens, 2 messages -> 8
      assert.equals(19, annotations(c, res).prompt_tokens_estimate)
    end)

    it("counts characters, not bytes, of UTF-8 text", function()
      local c = chain({ global = { max_prompt_tokens = 1000 } })
      local res = chat(c, { messages = { { role = "user", content = ("é"):rep(8) } } })
      assert.equals(2 + 4, annotations(c, res).prompt_tokens_estimate)
    end)

    it("counts text parts, tool call arguments and Anthropic system and blocks", function()
      local c = chain({ global = { max_prompt_tokens = 1000 } })
      local res = chat(c, { messages = {
        { role = "user", content = { { type = "text", text = ("a"):rep(8) },
                                     { type = "image_url", image_url = { url = "https://x/y.png" } } } },
        { role = "assistant", tool_calls = { { id = "c1", type = "function",
          ["function"] = { name = "f", arguments = ("b"):rep(8) } } } } } })
      assert.equals(4 + 8, annotations(c, res).prompt_tokens_estimate)
      res = t.request(c, { path = "/v1/messages", json = { model = "m", max_tokens = 10,
        system = ("s"):rep(4), messages = { { role = "user", content = {
          { type = "text", text = ("u"):rep(4) },
          { type = "tool_result", tool_use_id = "t", content = ("r"):rep(4) } } } } } })
      assert.equals(3 + 4, annotations(c, res).prompt_tokens_estimate)
    end)

    it("refuses a prompt over the limit with 413 prompt_too_long", function()
      local c = chain({ global = { max_prompt_tokens = 50 } })
      local res = chat(c, { messages = { { role = "user", content = ("x"):rep(200) } } })
      assert.equals(413, res.status)
      assert.equals("prompt_too_long", res.code)
      assert.equals("the prompt is about 54 tokens; the limit is 50", res.message)
    end)

    it("applies to embeddings input", function()
      local c = chain({ global = { max_prompt_tokens = 10 } })
      local res = t.request(c, { path = "/v1/embeddings",
        json = { model = "e", input = { ("x"):rep(24), ("y"):rep(24) } } })
      assert.equals("prompt_too_long", res.code)
    end)
  end)

  describe("the completion cap", function()
    it("lowers max_tokens above the cap and records a modify decision", function()
      local c = chain({ global = { max_tokens = 1000 } })
      local res = chat(c, { max_tokens = 5000 })
      assert.equals("ok", res.action)
      assert.equals(1000, sent_body(res).max_tokens)
      local d = decisions(res, "modify")
      assert.equals(1, #d)
      assert.equals("max_tokens lowered from 5000 to the limit 1000", d[1].reason)
    end)

    it("lowers max_completion_tokens too", function()
      local c = chain({ global = { max_tokens = 1000 } })
      local res = chat(c, { max_completion_tokens = 4000 })
      assert.equals(1000, sent_body(res).max_completion_tokens)
    end)

    it("leaves a value under the cap alone", function()
      local c = chain({ global = { max_tokens = 1000 } })
      local res = chat(c, { max_tokens = 999 })
      assert.is_nil(res.body)
      assert.equals(0, #decisions(res))
    end)

    it("refuses a value over the cap with 400 in reject mode", function()
      local c = chain({ global = { max_tokens = 1000, max_tokens_mode = "reject" } })
      local res = chat(c, { max_completion_tokens = 1001 })
      assert.equals("deny", res.action)
      assert.equals(400, res.status)
      assert.equals("max_tokens_too_large", res.code)
      assert.matches("max_completion_tokens may be at most 1000", res.message, 1, true)
    end)

    it("sets the default when the client sent none", function()
      local c = chain({ global = { max_tokens = 1000, default_max_tokens = 256 } })
      local res = chat(c)
      assert.equals(256, sent_body(res).max_completion_tokens)
      assert.equals("max_completion_tokens set to the default 256", decisions(res, "modify")[1].reason)
    end)

    it("caps Anthropic's max_tokens at /v1/messages", function()
      local c = chain({ global = { max_tokens = 1000 } })
      local res = t.request(c, { path = "/v1/messages", json = { model = "m", max_tokens = 8000,
        messages = { { role = "user", content = "hi" } } } })
      local b = sent_body(res)
      assert.equals(1000, b.max_tokens)
      assert.is_nil(b.max_completion_tokens)
    end)

    it("does not add a completion cap to embeddings", function()
      local c = chain({ global = { default_max_tokens = 256 } })
      local res = t.request(c, { path = "/v1/embeddings", json = { model = "e", input = "x" } })
      assert.is_nil(res.body)
    end)
  end)

  describe("headers that must not travel upstream", function()
    it("removes cookie and x-internal-* by default, keeps the rest, records the names", function()
      local c = chain({})
      local res = chat(c, nil, { cookie = "session=abc", ["x-internal-user"] = "42",
                                 ["x-internal-auth"] = "tok", ["x-team"] = "search" })
      assert.equals("ok", res.action)
      assert.is_nil(res.header_map.cookie)
      assert.is_nil(res.header_map["x-internal-user"])
      assert.is_nil(res.header_map["x-internal-auth"])
      assert.equals("search", res.header_map["x-team"])
      assert.same({ "cookie", "x-internal-auth", "x-internal-user" },
                  annotations(c, res).stripped_headers)
      local d = decisions(res, "modify")[1]
      assert.matches("cookie, x-internal-auth, x-internal-user", d.reason, 1, true)
      assert.is_nil(d.reason:find("abc", 1, true))
    end)

    it("uses the configured list instead of the default", function()
      local c = chain({ strip_headers = { "X-Debug-Token" } })
      local res = chat(c, nil, { cookie = "a=b", ["x-debug-token"] = "t" })
      assert.equals("a=b", res.header_map.cookie)
      assert.is_nil(res.header_map["x-debug-token"])
    end)

    it("changes nothing when no listed header is present", function()
      local res = chat(chain({}), nil, { ["x-team"] = "a" })
      assert.is_nil(res.headers)
    end)
  end)

  describe("per team and per consumer", function()
    local c = chain({
      global = { max_messages = 2, max_tokens = 100 },
      teams = { research = { max_messages = 10, max_tokens = 4000 } },
      consumers = { ["batch-app"] = { max_tokens = 16000 } },
    })

    it("uses the global limits for an unknown consumer", function()
      assert.equals("too_many_messages", chat(c, { messages = messages(3) }).code)
    end)

    it("uses the team's overrides", function()
      local res = chat(c, { messages = messages(3), max_tokens = 9000 }, { ["x-test-team"] = "research" })
      assert.equals("ok", res.action)
      assert.equals(4000, sent_body(res).max_tokens)
      assert.equals("team:research", annotations(c, res).limits_scope)
    end)

    it("lets the consumer's own overrides win over its team's, field by field", function()
      local h = { ["x-test-team"] = "research", ["x-test-consumer"] = "batch-app" }
      local res = chat(c, { messages = messages(5), max_tokens = 20000 }, h)
      assert.equals("ok", res.action) -- max_messages 10 from the team
      assert.equals(16000, sent_body(res).max_tokens)
      assert.equals("consumer:batch-app", annotations(c, res).limits_scope)
      res = chat(c, { messages = messages(11) }, h)
      assert.equals("too_many_messages", res.code)
    end)
  end)

  describe("policy exceptions", function()
    local function iso(epoch) return os.date("!%Y-%m-%dT%H:%M:%SZ", epoch) end
    local EXC = { id = "EXC-LIMITS-1", owner = "jane@example.com", reason = "long-context pilot",
                  created = iso(os.time() - 60), expires = iso(os.time() + 3600),
                  consumers = { "batch-app" },
                  grants = { limits = { max_prompt_tokens = 1000, max_messages = 6, max_tokens = 500 } } }
    local function with_exception(config)
      t.plugin_dirs = { "plugins" }
      return t.chain({ { name = "limits-consumer", path = CONSUMER },
                       { name = "request-limits", config = config } }, { exceptions = { EXC } })
    end
    local c = with_exception({ global = { max_prompt_tokens = 100, max_messages = 2, max_tokens = 50 } })
    local H = { ["x-test-consumer"] = "batch-app" }

    local function used(res)
      local _, audit = t.log(c, res.ctx, { status = 200 })
      return audit.exceptions
    end

    it("is not consulted, nor named in the audit record, when the request is within the limits", function()
      local res = chat(c, { max_tokens = 10 }, H)
      assert.equals("ok", res.action)
      assert.is_nil(used(res))
    end)

    it("relaxes a limit the request would break and is named in the audit record", function()
      local res = chat(c, { messages = messages(4, ("x"):rep(800)) }, H)
      assert.equals("ok", res.action, res.message)
      assert.same({ "EXC-LIMITS-1" }, used(res))
    end)

    it("raises the completion cap instead of clamping, then clamps at the granted value", function()
      local res = chat(c, { max_tokens = 400 }, H)
      assert.equals("ok", res.action)
      assert.is_nil(res.body) -- not lowered: the exception allows 500
      assert.same({ "EXC-LIMITS-1" }, used(res))
      res = chat(c, { max_tokens = 900 }, H)
      assert.equals(500, sent_body(res).max_tokens)
    end)

    it("still refuses past the granted value, and grants nothing to another consumer", function()
      assert.equals("too_many_messages", chat(c, { messages = messages(7) }, H).code)
      local res = chat(c, { messages = messages(4) }, { ["x-test-consumer"] = "other-app" })
      assert.equals("too_many_messages", res.code)
      assert.is_nil(used(res))
    end)
  end)

  describe("refuses a configuration", function()
    local function err_of(config)
      t.plugin_dirs = { "plugins" }
      local ch, err = t.try_chain({ { name = "request-limits", config = config } })
      assert.is_nil(ch)
      return err
    end

    it("with an unknown mode", function()
      assert.matches("max_tokens_mode: expected one of: clamp, reject",
        err_of({ global = { max_tokens_mode = "cut" } }))
    end)

    it("with a default above the cap", function()
      assert.matches("default_max_tokens is above max_tokens",
        err_of({ teams = { a = { max_tokens = 10, default_max_tokens = 20 } } }))
    end)

    it("with a header name that is not a token", function()
      assert.matches("required_headers%[1%]: is not a header name",
        err_of({ global = { required_headers = { "x team" } } }))
    end)

    it("with a typo in a limit", function()
      assert.matches("max_message: unknown field", err_of({ global = { max_message = 1 } }))
    end)
  end)
end)
