-- prompt_guard_spec.lua — behaviour of the prompt-guard plugin through the
-- real runtime: deny rules refuse without echoing the prompt, flag rules
-- record, allow rules carve exemptions out of the text, roles choose which
-- messages are read, both front doors and embeddings are covered.
-- Run from the repository root: ./build/sluice spec spec/plugins/prompt_guard_spec.lua
local t = require "sluice.test"

local CONSUMER = "spec/fixtures/limits/limits-consumer.lua"

local RULES = {
  { name = "no-credentials", pattern = [==[\bpassword\s*[:=]]==], reason = "credentials must not be sent to a model" },
  { name = "password-reset", pattern = [[password\s+reset]], action = "allow" },
  { name = "no-secrets", pattern = [[\bpassword\b]], reason = "passwords must not be discussed" },
  { name = "competitor", pattern = [[\bacme corp\b]], action = "flag", reason = "mentions a competitor" },
  { name = "pii-hint", pattern = [[\bssn\b]], action = "flag", reason = "may hold a social security number" },
}

local function chain(config)
  t.plugin_dirs = { "plugins" }
  return t.chain({ { name = "limits-consumer", path = CONSUMER },
                   { name = "prompt-guard", config = config or { rules = RULES } } })
end

local function chat(c, msgs, path)
  return t.request(c, { path = path, json = { model = "m", max_tokens = 10, messages = msgs } })
end

local function user(text) return { { role = "user", content = text } } end

local function decisions(res, outcome)
  local out = {}
  for _, d in ipairs(t.decisions(res.ctx)) do
    if d.plugin == "prompt-guard" and d.outcome == outcome then out[#out + 1] = d end
  end
  return out
end

describe("prompt-guard plugin", function()
  local c = chain()

  it("lets an ordinary prompt through without a decision", function()
    local res = chat(c, user("summarise this report"))
    assert.equals("ok", res.action)
    assert.equals(0, #t.decisions(res.ctx))
  end)

  it("refuses a prompt matching a deny rule with 400 prompt_blocked naming the rule and its reason", function()
    local res = chat(c, user("my password: hunter2, log in for me"))
    assert.equals("deny", res.action)
    assert.equals(400, res.status)
    assert.equals("prompt_blocked", res.code)
    assert.equals("the prompt was blocked by policy rule 'no-credentials': "
      .. "credentials must not be sent to a model", res.message)
  end)

  it("never echoes the text that matched", function()
    local res = chat(c, user("my password: hunter2"))
    assert.is_nil(res.message:find("hunter2", 1, true))
    for _, d in ipairs(t.decisions(res.ctx)) do
      assert.is_nil((d.reason or ""):find("hunter2", 1, true))
    end
  end)

  it("matches case-insensitively by default", function()
    assert.equals("deny", chat(c, user("What is the admin PASSWORD?")).action)
  end)

  it("matches case-sensitively when the rule says so", function()
    local cs = chain({ rules = { { name = "x", pattern = "SECRET", reason = "r", ignore_case = false } } })
    assert.equals("ok", chat(cs, user("a secret")).action)
    assert.equals("deny", chat(cs, user("a SECRET")).action)
  end)

  describe("allow rules", function()
    it("exempt the text they match from the deny rules", function()
      local res = chat(c, user("how do I do a password reset?"))
      assert.equals("ok", res.action)
    end)

    it("exempt only that text: a deny match elsewhere still refuses", function()
      local res = chat(c, user("password reset please, and tell me the password of bob"))
      assert.equals("deny", res.action)
      assert.matches("'no-secrets'", res.message, 1, true)
    end)
  end)

  describe("flag rules", function()
    it("record a flag decision and the rule names, and let the request through", function()
      local res = chat(c, user("compare us with ACME Corp; my SSN question"))
      assert.equals("ok", res.action)
      local f = decisions(res, "flag")
      assert.equals(2, #f)
      assert.equals("prompt matched rule 'competitor': mentions a competitor (user message)", f[1].reason)
      assert.matches("'pii%-hint'", f[2].reason)
      local _, audit = t.log(c, res.ctx, { status = 200 })
      assert.same({ "competitor", "pii-hint" }, audit.annotations["prompt-guard"].prompt_flags)
    end)

    it("record each rule once however many messages match", function()
      local res = chat(c, { { role = "user", content = "acme corp" }, { role = "assistant", content = "ok" },
                            { role = "user", content = "acme corp again" } })
      assert.equals(1, #decisions(res, "flag"))
    end)

    it("listed before a deny rule are recorded when it refuses; after it, not checked", function()
      local res = chat(c, user("acme corp asked for the password"))
      assert.equals("deny", res.action)
      assert.equals(0, #decisions(res, "flag")) -- no-secrets comes before competitor
      local fc = chain({ rules = { RULES[4], RULES[3] } })
      res = chat(fc, user("acme corp asked for the password"))
      assert.equals("deny", res.action)
      assert.equals(1, #decisions(res, "flag"))
      assert.equals(1, #decisions(res, "deny"))
    end)
  end)

  describe("roles", function()
    it("read user and system messages by default, not assistant or tool ones", function()
      assert.equals("deny", chat(c, { { role = "system", content = "the password is x" },
                                      { role = "user", content = "hi" } }).action)
      assert.equals("deny", chat(c, { { role = "developer", content = "the password is x" },
                                      { role = "user", content = "hi" } }).action)
      assert.equals("ok", chat(c, { { role = "user", content = "hi" },
                                    { role = "assistant", content = "the password is x" },
                                    { role = "tool", tool_call_id = "c", content = "password" } }).action)
    end)

    it("follow the configured list, and a rule's own list", function()
      local cc = chain({ roles = { "assistant" }, rules = {
        { name = "a", pattern = "alpha", reason = "r" },
        { name = "u", pattern = "beta", reason = "r", roles = { "user" } } } })
      assert.equals("ok", chat(cc, user("alpha")).action)
      assert.equals("deny", chat(cc, { { role = "user", content = "x" }, { role = "assistant", content = "alpha" } }).action)
      assert.equals("deny", chat(cc, user("beta")).action)
    end)

    it("read text parts of a content list", function()
      local res = chat(c, { { role = "user", content = { { type = "text", text = "hello" },
        { type = "image_url", image_url = { url = "data:image/png;base64,AAAA" } },
        { type = "text", text = "the password is x" } } } })
      assert.equals("deny", res.action)
    end)
  end)

  it("reads Anthropic's system field and content blocks at /v1/messages", function()
    local res = t.request(c, { path = "/v1/messages", json = { model = "m", max_tokens = 10,
      system = "the password is 1234", messages = user("hi") } })
    assert.equals("deny", res.action)
    res = chat(c, { { role = "user", content = { { type = "text", text = "password: x" } } } }, "/v1/messages")
    assert.equals("deny", res.action)
  end)

  it("reads an Anthropic tool_result block as tool text, not the user's", function()
    local res = chat(c, { { role = "user", content = {
      { type = "tool_result", tool_use_id = "t1", content = "the password is x" } } } }, "/v1/messages")
    assert.equals("ok", res.action)
  end)

  it("reads Anthropic document blocks: text sources, content sources, title and context", function()
    local function doc(block)
      block.type = "document"
      return chat(c, { { role = "user", content = { block, { type = "text", text = "summarise" } } } },
        "/v1/messages")
    end
    assert.equals("deny", doc({ source = { type = "text", media_type = "text/plain",
      data = "the password is hunter2" } }).action)
    assert.equals("deny", doc({ source = { type = "content",
      content = { { type = "text", text = "password: x" } } } }).action)
    assert.equals("deny", doc({ title = "password list", source = { type = "text", data = "a" } }).action)
    assert.equals("deny", doc({ context = "the password is x", source = { type = "text", data = "a" } }).action)
    assert.equals("ok", doc({ source = { type = "text", data = "quarterly report" } }).action)
  end)

  it("reads a message's author name with its text", function()
    local res = chat(c, { { role = "user", name = "password_is_hunter2", content = "hi" } })
    assert.equals("ok", res.action) -- \bpassword\b: "_" is a word character
    res = chat(c, { { role = "user", name = "password", content = "hi" } })
    assert.equals("deny", res.action)
  end)

  it("reads OpenAI's legacy function role as tool text", function()
    local tc = chain({ rules = RULES, roles = { "tool" } })
    local res = chat(tc, { { role = "function", name = "lookup", content = "the password is x" } })
    assert.equals("deny", res.action)
    assert.equals("ok", chat(c, { { role = "function", name = "lookup", content = "the password is x" } }).action)
  end)

  it("reads embeddings input as user text", function()
    local res = t.request(c, { path = "/v1/embeddings", json = { model = "e", input = { "a", "password: x" } } })
    assert.equals("deny", res.action)
  end)

  it("leaves a body that is not JSON alone", function()
    assert.equals("ok", t.request(c, { body = "password: x" }).action)
  end)

  describe("refuses a configuration", function()
    local function err_of(config)
      t.plugin_dirs = { "plugins" }
      local ch, err = t.try_chain({ { name = "prompt-guard", config = config } })
      assert.is_nil(ch)
      return err
    end

    it("with a pattern that does not compile", function()
      assert.matches("rules%[1%]%.pattern", err_of({ rules = { { name = "x", pattern = "(", reason = "r" } } }))
    end)

    it("with a deny rule without a reason", function()
      assert.matches("a deny or flag rule needs a reason", err_of({ rules = { { name = "x", pattern = "a" } } }))
    end)

    it("with two rules of the same name", function()
      assert.matches("'x' is used twice", err_of({ rules = {
        { name = "x", pattern = "a", reason = "r" }, { name = "x", pattern = "b", reason = "r" } } }))
    end)

    it("with an unknown action", function()
      assert.matches("action: expected one of: deny, flag, allow",
        err_of({ rules = { { name = "x", pattern = "a", reason = "r", action = "block" } } }))
    end)
  end)
end)
