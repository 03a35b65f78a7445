-- redact_spec.lua — behaviour of the redact plugin through the real
-- runtime: where in a request it looks, the three modes, per-class modes,
-- custom patterns and the allowlist, what the audit record gets (counts,
-- never values), and answers redacted whole and streamed, with a value
-- split across events. Quality per class: redact_quality_spec.lua.
-- Run from the repository root: ./build/sluice spec spec/plugins/redact_spec.lua
local t = require "sluice.test"
local json = require "sluice.json"

local CARD = "4111 1111 1111 1111"
local KEY = "sk-proj-Ab3dEf6hIj9kLmNoPqRsTuVwXyZ012345"

local function chain(config)
  return t.chain({ { name = "redact", config = config or {} } })
end

-- `sluice spec` reads no secrets (no secret_env, no /run/secrets): a chain
-- in hash mode is built with sluice.secret answering env:SPEC_REDACT_KEY,
-- and the real function is put back right after.
local HASH_KEY = "spec-redact-hash-key"
local function hash_chain(config)
  local sandbox = require "sluice.sandbox"
  local out = {}
  t.chain({ { name = "secret-probe", path = "spec/fixtures/redact/secret-probe.lua",
              config = { out = out } } })
  local real = out.secret
  sandbox.service("secret", function(ref)
    if ref == "env:SPEC_REDACT_KEY" then return HASH_KEY end
    return real(ref)
  end)
  local ok, c = pcall(chain, config)
  sandbox.service("secret", real)
  if not ok then error(c, 0) end
  return c
end

local function chat(c, messages, extra)
  local body = { model = "m", messages = messages }
  for k, v in pairs(extra or {}) do body[k] = v end
  return t.request(c, { json = body })
end

local function user(text) return { { role = "user", content = text } } end

local function sent(res)
  assert.equals("ok", res.action, res.message)
  return assert(json.decode(assert(res.body, "the body was not changed")))
end

describe("redact plugin", function()
  describe("in mask mode", function()
    it("replaces each value with a typed placeholder numbered per distinct value", function()
      local res = chat(chain(), user(
        "alice@example.com wrote to bob@example.com; Alice@Example.com again, card " .. CARD))
      assert.equals("[EMAIL_1] wrote to [EMAIL_2]; [EMAIL_1] again, card [CREDIT_CARD_1]",
        sent(res).messages[1].content)
    end)

    it("keeps numbering across messages, parts and the system prompt of one request", function()
      local res = chat(chain(), {
        { role = "system", content = "Escalate to ops@corp.example" },
        { role = "developer", content = "SSN format is 123-45-6789" },
        { role = "user", content = { { type = "text", text = "mail ops@corp.example and x@y.example" },
                                     { type = "image_url", image_url = { url = "https://a.example/i.png" } } } },
      })
      local m = sent(res).messages
      assert.equals("Escalate to [EMAIL_1]", m[1].content)
      assert.equals("SSN format is [SSN_1]", m[2].content)
      assert.equals("mail [EMAIL_1] and [EMAIL_2]", m[3].content[1].text)
      assert.equals("https://a.example/i.png", m[3].content[2].image_url.url)
    end)

    it("redacts inside tool-call arguments and tool results but leaves tool descriptions", function()
      local res = chat(chain(), {
        { role = "assistant", content = json.null, tool_calls = { { id = "c1", type = "function",
          ["function"] = { name = "lookup", arguments = '{"email":"eve@example.org","n":3}' } } } },
        { role = "tool", tool_call_id = "c1", content = "found card " .. CARD },
      }, { tools = { { type = "function", ["function"] = { name = "lookup",
        description = "Looks up a customer such as help@example.com" } } } })
      local b = sent(res)
      local args = json.decode(b.messages[1].tool_calls[1]["function"].arguments)
      assert.same({ email = "[EMAIL_1]", n = 3 }, args)
      assert.equals("found card [CREDIT_CARD_1]", b.messages[2].content)
      assert.equals("Looks up a customer such as help@example.com",
        b.tools[1]["function"].description)
    end)

    it("redacts raw tool-call arguments that are not JSON", function()
      local res = chat(chain(), { { role = "assistant", tool_calls = { { id = "c", type = "function",
        ["function"] = { name = "f", arguments = "email eve@example.org" } } } } })
      assert.equals("email [EMAIL_1]", sent(res).messages[1].tool_calls[1]["function"].arguments)
    end)

    it("redacts embeddings input given as a string or a list", function()
      local c = chain()
      local res = t.request(c, { path = "/v1/embeddings",
        json = { model = "e", input = { "ip 10.0.0.7", "plain", "key " .. KEY } } })
      assert.same({ "ip [IPV4_1]", "plain", "key [OPENAI_KEY_1]" }, sent(res).input)
      res = t.request(c, { path = "/v1/embeddings", json = { model = "e", input = "ip 10.0.0.7" } })
      assert.equals("ip [IPV4_1]", sent(res).input)
    end)

    it("redacts an Anthropic request's system blocks, text, tool_use input and tool_result", function()
      local res = t.request(chain(), { path = "/v1/messages", json = {
        model = "claude", max_tokens = 10,
        system = { { type = "text", text = "Agent phone +44 20 7946 0958" } },
        messages = {
          { role = "user", content = "I am carol@example.com" },
          { role = "assistant", content = { { type = "tool_use", id = "t1", name = "pay",
            input = { iban = "DE89 3704 0044 0532 0130 00", nested = { "carol@example.com" } } } } },
          { role = "user", content = { { type = "tool_result", tool_use_id = "t1",
            content = { { type = "text", text = "paid from 10.1.2.3" } } } } },
        } } })
      local b = sent(res)
      assert.equals("Agent phone [PHONE_1]", b.system[1].text)
      assert.equals("I am [EMAIL_1]", b.messages[1].content)
      assert.same({ iban = "[IBAN_1]", nested = { "[EMAIL_1]" } }, b.messages[2].content[1].input)
      assert.equals("paid from [IPV4_1]", b.messages[3].content[1].content[1].text)
    end)

    it("leaves the body untouched when nothing matched", function()
      local res = chat(chain(), user("version 1.2.3.4.5 shipped on 2024-03-15, order 4111111111111112"))
      assert.equals("ok", res.action)
      assert.is_nil(res.body)
      assert.same({}, t.decisions(res.ctx))
    end)

    it("records counts per class and a modify decision, never the values", function()
      local c = chain()
      local res = chat(c, user("a@example.com b@example.com a@example.com SSN 123-45-6789"))
      assert.equals("ok", res.action)
      local _, audit = t.log(c, res.ctx)
      assert.same({ EMAIL = 3, SSN = 1 }, audit.annotations.redact.redactions)
      assert.same({ { plugin = "redact", outcome = "modify", reason = "redacted 3 EMAIL, 1 SSN" } },
        audit.decisions)
      local text = json.encode(audit)
      assert.is_nil(text:find("example.com", 1, true))
      assert.is_nil(text:find("6789", 1, true))
    end)
  end)

  describe("in hash mode", function()
    local SECRET = "env:SPEC_REDACT_KEY"

    it("replaces a value with a hash keyed by hash_secret, equal values alike", function()
      local res = chat(hash_chain({ mode = "hash", hash_secret = SECRET }),
        user("x@example.com, X@example.com, y@example.com"))
      local out = sent(res).messages[1].content
      local a, b, c = out:match("^%[EMAIL:(%x+)%], %[EMAIL:(%x+)%], %[EMAIL:(%x+)%]$")
      assert.is_truthy(a, out)
      assert.equals(12, #a)
      assert.equals(a, b)
      assert.not_equals(a, c)
      assert.equals(require("sluice.hash").hmac_sha256(HASH_KEY, "EMAIL:x@example.com"):sub(1, 12), a)
    end)

    it("mixes hash_salt in: other hashes under another salt, same secret", function()
      local one = sent(chat(hash_chain({ mode = "hash", hash_secret = SECRET }),
        user("x@example.com"))).messages[1].content
      local two = sent(chat(hash_chain({ mode = "hash", hash_secret = SECRET, hash_salt = "tenant-2" }),
        user("x@example.com"))).messages[1].content
      assert.not_equals(one, two)
      assert.equals("[EMAIL:" .. require("sluice.hash").hmac_sha256(HASH_KEY,
        "tenant-2:EMAIL:x@example.com"):sub(1, 12) .. "]", two)
    end)

    it("refuses the policy when a class is hashed without hash_secret, naming the key", function()
      for _, config in ipairs({ { mode = "hash" }, { mode = "hash", hash_salt = "public" },
                                { classes = { SSN = "hash", EMAIL = "mask" } },
                                { custom = { { name = "EMP", pattern = "EMP-\\d+", mode = "hash" } },
                                  classes = { "EMAIL" } } }) do
        local ok, err = t.try_chain({ { name = "redact", config = config } })
        assert.is_nil(ok)
        assert.matches("hash_secret is required when a class is hashed", err, 1, true)
      end
      local _, err = t.try_chain({ { name = "redact", config = { classes = { SSN = "hash" } } } })
      assert.matches("SSN uses hash mode", err, 1, true)
      assert.is_truthy(t.try_chain({ { name = "redact", config = { classes = { SSN = "mask" } } } }))
    end)
  end)

  describe("in block mode", function()
    it("refuses with 400 naming the class, not the value", function()
      local res = chat(chain({ classes = { SSN = "block", EMAIL = "mask" } }),
        user("mail a@example.com, SSN 123-45-6789"))
      assert.equals("deny", res.action)
      assert.equals(400, res.status)
      assert.equals("sensitive_data_blocked", res.code)
      assert.equals("the request contains a US social security number (SSN), which policy "
        .. "does not allow to be sent to a model", res.message)
      assert.is_nil(res.message:find("6789", 1, true))
    end)

    it("lets a request through when only mask classes matched", function()
      local res = chat(chain({ classes = { SSN = "block", EMAIL = "mask" } }), user("a@example.com"))
      assert.equals("[EMAIL_1]", sent(res).messages[1].content)
    end)
  end)

  describe("configuration", function()
    it("looks only for the classes listed", function()
      local res = chat(chain({ classes = { "EMAIL" } }), user("a@example.com 10.0.0.1"))
      assert.equals("[EMAIL_1] 10.0.0.1", sent(res).messages[1].content)
    end)

    it("applies custom patterns with their own mode", function()
      local c = chain({ custom = { { name = "EMPLOYEE_ID", pattern = [[\bEMP-\d{6}\b]] },
                                   { name = "PROJECT", pattern = [[(?i)project (blue|red)bird]], mode = "block" } } })
      assert.equals("badge [EMPLOYEE_ID_1] for [EMAIL_1]",
        sent(chat(c, user("badge EMP-004211 for a@example.com"))).messages[1].content)
      local res = chat(c, user("status of Project Bluebird?"))
      assert.equals("deny", res.action)
      assert.matches("policy's PROJECT pattern", res.message, 1, true)
    end)

    it("leaves values the allowlist matches", function()
      local res = chat(chain({ allowlist = { [[@example\.com$]], "^4111 1111 1111 1111$" } }),
        user("a@example.com b@corp.example " .. CARD))
      assert.equals("a@example.com [EMAIL_1] " .. CARD, sent(res).messages[1].content)
    end)

    it("refuses unknown classes, bad modes and bad custom patterns", function()
      local _, err = t.try_chain({ { name = "redact", config = { classes = { "EMAILS" } } } })
      assert.matches("config.classes: unknown class 'EMAILS'", err, 1, true)
      _, err = t.try_chain({ { name = "redact", config = { classes = { EMAIL = "drop" } } } })
      assert.matches("EMAIL: mode must be mask, hash or block", err, 1, true)
      _, err = t.try_chain({ { name = "redact", config = { custom = { { name = "X", pattern = "(" } } } } })
      assert.matches("config.custom[1].pattern", err, 1, true)
      _, err = t.try_chain({ { name = "redact", config = { custom = { { name = "EMAIL", pattern = "x" } } } } })
      assert.matches("has the name of a built-in class", err, 1, true)
    end)
  end)

  describe("where else a model reads text", function()
    it("redacts the end-user id, author names and legacy function calls and results", function()
      local res = chat(chain(), {
        { role = "user", name = "alice@example.com", content = "hi" },
        { role = "assistant", content = json.null, function_call = { name = "lookup",
          arguments = '{"email":"eve@example.org"}' } },
        { role = "function", name = "lookup", content = "card " .. CARD },
      }, { user = "alice@example.com" })
      local b = sent(res)
      assert.equals("EMAIL_1", b.messages[1].name) -- names allow no brackets
      assert.same({ email = "[EMAIL_2]" }, json.decode(b.messages[2].function_call.arguments))
      assert.equals("card [CREDIT_CARD_1]", b.messages[3].content)
      assert.equals("[EMAIL_1]", b.user)
    end)

    it("redacts Anthropic document blocks: text sources, content sources, title and context", function()
      local res = t.request(chain(), { path = "/v1/messages", json = { model = "claude", max_tokens = 10,
        messages = { { role = "user", content = {
          { type = "document", title = "Letter to bob@example.com", context = "from 10.1.2.3",
            source = { type = "text", media_type = "text/plain", data = "SSN 123-45-6789" } },
          { type = "document", source = { type = "content",
            content = { { type = "text", text = "call +44 20 7946 0958" } } } },
          { type = "document", source = { type = "base64", media_type = "application/pdf", data = "JVBERi0x" } },
          { type = "text", text = "summarise" } } } } } })
      local parts = sent(res).messages[1].content
      assert.equals("Letter to [EMAIL_1]", parts[1].title)
      assert.equals("from [IPV4_1]", parts[1].context)
      assert.equals("SSN [SSN_1]", parts[1].source.data)
      assert.equals("call [PHONE_1]", parts[2].source.content[1].text)
      assert.equals("JVBERi0x", parts[3].source.data)
    end)

    it("blocks a block-mode value in a document or the end-user id", function()
      local c = chain({ classes = { SSN = "block", EMAIL = "block" } })
      local res = t.request(c, { path = "/v1/messages", json = { model = "claude", max_tokens = 10,
        messages = { { role = "user", content = { { type = "document",
          source = { type = "text", media_type = "text/plain", data = "SSN 123-45-6789" } } } } } } })
      assert.equals(400, res.status)
      res = chat(c, user("hello"), { user = "eve@example.org" })
      assert.equals(400, res.status)
    end)
  end)

  describe("escaped and non-ASCII text", function()
    it("decodes tool-call arguments with \\u escapes before deciding they are clean", function()
      local res = chat(chain(), { { role = "assistant", tool_calls = { { id = "c", type = "function",
        ["function"] = { name = "f", arguments = '{"k":"sk\\u002dproj-Ab3dEf6hIj9kLmNoPqRsTuVwXyZ012345",'
          .. '"to":"eve\\u0040example.org"}' } } } } })
      local args = json.decode(sent(res).messages[1].tool_calls[1]["function"].arguments)
      assert.same({ k = "[OPENAI_KEY_1]", to = "[EMAIL_1]" }, args)
    end)

    it("blocks an escaped block-mode value in tool-call arguments", function()
      local res = chat(chain({ mode = "block" }), { { role = "assistant", tool_calls = { { id = "c",
        type = "function", ["function"] = { name = "f", arguments = '{"to":"eve\\u0040example.org"}' } } } } })
      assert.equals("deny", res.action)
      assert.equals("sensitive_data_blocked", res.code)
    end)

    it("finds e-mail addresses with UTF-8 local parts (RFC 6531) whole", function()
      local res = chat(chain(), user("josé@empresa.es, 山田@example.jp, maría.garcía@empresa.es, "
        .. "Grüße an müller.jürgen@firma.de"))
      assert.equals("[EMAIL_1], [EMAIL_2], [EMAIL_3], Grüße an [EMAIL_4]", sent(res).messages[1].content)
    end)

    it("leaves quotes and dashes before a UTF-8 address outside it", function()
      local res = chat(chain(), user("“josé@empresa.es” — «zoë@example.org» see—ana@example.com"))
      assert.equals("“[EMAIL_1]” — «[EMAIL_2]» see—[EMAIL_3]", sent(res).messages[1].content)
    end)

    it("matches custom patterns and the allowlist as UTF-8 (case beyond ASCII, \\w)", function()
      local c = chain({ custom = { { name = "PROJECT", pattern = [[(?i)projekt ölberg]] },
                                   { name = "CUSTOMER", pattern = [[\bKunde \w+]] } },
                        allowlist = { [[(?i)^öffentlich@firma\.de$]] } })
      assert.equals("Status [PROJECT_1]? [CUSTOMER_1] ok, Öffentlich@firma.de",
        sent(chat(c, user("Status PROJEKT ÖLBERG? Kunde Müller ok, Öffentlich@firma.de"))).messages[1].content)
    end)

    it("searches custom patterns over text that is not valid UTF-8", function()
      local c = chain({ custom = { { name = "EMP", pattern = [[EMP-\d{4}]] } } })
      local res = t.request(c, { path = "/v1/embeddings",
        json = { model = "e", input = "bad \255 byte EMP-1234" } })
      assert.equals("bad \255 byte [EMP_1]", sent(res).input)
    end)
  end)

  describe("long text", function()
    it("checks a private key longer than 32 KB and an address with a 40 KB domain", function()
      local key = "-----BEGIN RSA PRIVATE KEY-----\n" .. ("MIIEpAIBAAKCAQEAx4f9Yb2\n"):rep(1800)
        .. "-----END RSA PRIVATE KEY-----"
      local host = ("a"):rep(60) .. "."
      local mail = "ops@" .. host:rep(660) .. "example.com"
      local res = chat(chain(), user("key " .. key .. " mail " .. mail .. " end"))
      assert.equals("key [PRIVATE_KEY_1] mail [EMAIL_1] end", sent(res).messages[1].content)
    end)
  end)

  describe("on answers", function()
    local function answer(c, res, ctype, pieces)
      t.upstream_response(c, res.ctx, 200, { ["content-type"] = ctype })
      local out = {}
      for i, p in ipairs(pieces) do
        local r = t.body_filter(c, res.ctx, p, ctype ~= "text/event-stream" and i == #pieces)
        assert.is_string(r)
        out[#out + 1] = r
      end
      return table.concat(out)
    end

    local function chunk(text, finish)
      return "data: " .. json.encode({ id = "c1", object = "chat.completion.chunk", model = "m",
        choices = { { index = 0, delta = text and { content = text } or {},
                      finish_reason = finish or json.null } } }) .. "\n\n"
    end

    local function contents(stream)
      local out = {}
      for data in stream:gmatch("data: ([^\n]*)\n\n") do
        if data ~= "[DONE]" then
          local j = json.decode(data)
          for _, ch in ipairs(j.choices or {}) do
            if ch.delta and type(ch.delta.content) == "string" then out[#out + 1] = ch.delta.content end
          end
        end
      end
      return table.concat(out)
    end

    it("does not filter answers at all unless output is on", function()
      local runtime = require "sluice.runtime"
      local c = chain()
      assert.equals(0, #c.body_filter) -- no stream is framed for it
      assert.equals(0, bit.band(c.mask, runtime.PHASE_BIT.body_filter))
      assert.equals(1, #chain({ output = true }).body_filter)
    end)

    it("redacts a whole answer with the numbering of the prompt", function()
      local c = chain({ output = true })
      local res = chat(c, user("I am a@example.com"))
      local out = answer(c, res, "application/json", { json.encode({ choices = { { index = 0,
        message = { role = "assistant", content = "Noted a@example.com and b@example.com" } } } }) })
      assert.equals("Noted [EMAIL_1] and [EMAIL_2]", json.decode(out).choices[1].message.content)
      local _, audit = t.log(c, res.ctx)
      assert.same({ EMAIL = 2 }, audit.annotations.redact.output_redactions)
      assert.equals("redacted 2 EMAIL in the answer", audit.decisions[2].reason)
    end)

    it("catches a value split across stream events and sends everything else", function()
      local c = chain({ output = true })
      local res = chat(c, user("hello"))
      local events = { chunk("Sure, write to jo"), chunk("hn.smith@exam"), chunk("ple.com or call"),
        chunk(" 415-555-"), chunk("2671 today. "), chunk("Thanks for asking about it all."),
        chunk(nil, "stop"), "data: [DONE]\n\n" }
      local out = answer(c, res, "text/event-stream", events)
      assert.equals("Sure, write to [EMAIL_1] or call [PHONE_1] today. Thanks for asking about it all.",
        contents(out))
      assert.is_nil(out:find("smith", 1, true))
      assert.is_nil(out:find("2671", 1, true))
      assert.matches("data: %[DONE%]\n\n$", out)
    end)

    it("holds back only a short tail: early text goes out before the stream ends", function()
      local c = chain({ output = true, output_holdback = 16 })
      local res = chat(c, user("hello"))
      t.upstream_response(c, res.ctx, 200, { ["content-type"] = "text/event-stream" })
      local first = t.body_filter(c, res.ctx,
        chunk("This is a fairly long opening sentence without anything in it, and more "), false)
      local sent_text = contents(first)
      assert.is_true(#sent_text > 40, sent_text)
      local rest = t.body_filter(c, res.ctx, chunk(nil, "stop"), false)
      assert.equals("This is a fairly long opening sentence without anything in it, and more ",
        sent_text .. contents(rest))
    end)

    it("sends what a tail still holds before [DONE] when no finish event came", function()
      local c = chain({ output = true })
      local res = chat(c, user("hello"))
      local out = answer(c, res, "text/event-stream", { chunk("key sk-proj-Ab3dEf6hIj9kL"),
        chunk("mNoPqRsTuVwXyZ012345"), "data: [DONE]\n\n" })
      assert.equals("key [OPENAI_KEY_1]", contents(out))
    end)

    it("redacts Anthropic text deltas split across events", function()
      local c = chain({ output = true })
      local res = chat(c, user("hello"))
      local function ev(name, data) return "event: " .. name .. "\ndata: " .. json.encode(data) .. "\n\n" end
      local function delta(s) return ev("content_block_delta", { type = "content_block_delta", index = 0,
        delta = { type = "text_delta", text = s } }) end
      local out = answer(c, res, "text/event-stream", {
        ev("content_block_start", { type = "content_block_start", index = 0,
          content_block = { type = "text", text = "" } }),
        delta("card 4111 1111 "), delta("1111 1111 ok"),
        ev("content_block_stop", { type = "content_block_stop", index = 0 }),
        ev("message_stop", { type = "message_stop" }) })
      local text = {}
      for data in out:gmatch("data: ([^\n]*)\n\n") do
        local j = json.decode(data)
        if j.type == "content_block_delta" then text[#text + 1] = j.delta.text end
      end
      assert.equals("card [CREDIT_CARD_1] ok", table.concat(text))
      assert.matches("content_block_stop.*message_stop", out)
    end)

    it("filters stream events of any length (a 1 KB chunk, a 40 KB chunk)", function()
      local c = chain({ output = true })
      local res = chat(c, user("hello"))
      local long = ("All quiet on this line. "):rep(50)
      local huge = ("x"):rep(40000)
      local out = answer(c, res, "text/event-stream", { chunk(long .. "mail a@example.com "),
        chunk(huge .. " card " .. CARD .. " "), chunk(nil, "stop"), "data: [DONE]\n\n" })
      assert.equals(long .. "mail [EMAIL_1] " .. huge .. " card [CREDIT_CARD_1] ", contents(out))
    end)

    it("redacts refusals and reasoning in whole and streamed answers", function()
      local c = chain({ output = true })
      local res = chat(c, user("hello"))
      local out = json.decode(answer(c, res, "application/json", { json.encode({ choices = { { index = 0,
        message = { role = "assistant", content = json.null, refusal = "I cannot mail a@example.com",
                    reasoning_content = "SSN 123-45-6789 is private" } } } }) }))
      assert.equals("I cannot mail [EMAIL_1]", out.choices[1].message.refusal)
      assert.equals("SSN [SSN_1] is private", out.choices[1].message.reasoning_content)

      c = chain({ output = true })
      res = chat(c, user("hello"))
      local function delta(d, finish)
        return "data: " .. json.encode({ id = "c1", object = "chat.completion.chunk", model = "m",
          choices = { { index = 0, delta = d, finish_reason = finish or json.null } } }) .. "\n\n"
      end
      local stream = answer(c, res, "text/event-stream", {
        delta({ reasoning_content = "the user b@exa" }), delta({ reasoning_content = "mple.com asked" }),
        delta({ refusal = "no, 415-555-" }), delta({ refusal = "2671 stays private" }),
        delta({}, "stop"), "data: [DONE]\n\n" })
      local got = { reasoning_content = {}, refusal = {} }
      for data in stream:gmatch("data: ([^\n]*)\n\n") do
        if data ~= "[DONE]" then
          for _, ch in ipairs(json.decode(data).choices) do
            for f, list in pairs(got) do
              if type(ch.delta[f]) == "string" then list[#list + 1] = ch.delta[f] end
            end
          end
        end
      end
      assert.equals("the user [EMAIL_1] asked", table.concat(got.reasoning_content))
      assert.equals("no, [PHONE_1] stays private", table.concat(got.refusal))
      assert.is_nil(stream:find("2671", 1, true))
    end)

    it("masks block-mode classes in answers instead of failing the stream", function()
      local c = chain({ output = true, mode = "block" })
      local res = chat(c, user("hello"))
      local out = answer(c, res, "application/json",
        { '{"choices":[{"message":{"content":"SSN 123-45-6789"}}]}' })
      assert.equals("SSN [SSN_1]", json.decode(out).choices[1].message.content)
    end)
  end)
end)
