-- End-to-end: the redact plugin in the real binary in front of the shipped
-- mock. Values found in a chat request (system prompt, content parts, tool
-- arguments), an Anthropic /v1/messages request and an embeddings input
-- never reach the provider (the mock records what it received) nor the
-- gateway's access and error logs, which get counts per class; a class in
-- block mode is refused with 400 before anything goes upstream; and an
-- answer is redacted, streamed too, where the value is split across SSE
-- events. The mock answers "Hello from the sluice mock provider." one word
-- an event and cannot echo a prompt, so the answer-side checks use a
-- custom pattern matching "sluice mock" (" sluice" and " mock" come in two
-- events). Hash mode is keyed by a secret file (hash_secret), read from
-- the gateway's secret_dirs.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"
local json = require "sluice.json"

local EMAIL = "dana.scully@fbi.example.gov"
local PHONE = "+1 202 555 0143"
local CARD = "5555 5555 5555 4444"
local IBAN = "GB82 WEST 1234 5698 7654 32"
local KEY = "sk-proj-Qm9yZXZlci1hbmQtZXZlcjEyMzQ1Njc4OTAxMjM0"
local SSN = "536-90-4399"
local VALUES = { EMAIL, PHONE, CARD, IBAN, KEY, SSN, "5555555555554444", "GB82WEST12345698765432" }

local HASH_KEY = "e2e-redact-hash-key"

local function policy(url, key_file)
  return ([[
backends:
  mock: { provider: openai, url: "%s", region: local }
default_backend: mock
models:
  mock-model: { targets: [ { backend: mock, model: mock-model } ] }
plugins:
  - name: redact
    config:
      classes: { EMAIL: mask, PHONE: mask, CREDIT_CARD: hash, IBAN: mask, OPENAI_KEY: mask, SSN: block, PRIVATE_KEY: mask }
      custom:
        - { name: PRODUCT, pattern: 'sluice\s+mock' }
      output: true
      hash_secret: "file:%s"
]]):format(url, key_file)
end

describe("redact in the gateway", function()
  local mock, gw, access_log, error_log

  local function post(path, body, headers)
    local h = { ["content-type"] = "application/json" }
    for k, v in pairs(headers or {}) do h[k] = v end
    return assert(http.request(gw.port, { method = "POST", path = path, headers = h,
                                          body = json.encode(body) }))
  end

  local function received()
    local res = assert(http.request(mock.port, { path = "/mock/requests" }))
    assert.are.equal(200, res.status)
    return json.decode(res.body).requests
  end

  local function assert_clean(text, where)
    for _, v in ipairs(VALUES) do
      assert.is_nil(text:find(v, 1, true), where .. " holds " .. v .. ":\n" .. text)
    end
  end

  -- The access log's line for a request id, once it is written.
  local function access_line(id)
    local deadline = proc.now() + 3
    while proc.now() < deadline do
      for line in (proc.read_file(access_log) or ""):gmatch("[^\n]+") do
        if line:find(id, 1, true) then return line end
      end
      proc.sleep(0.02)
    end
    error("no access log line for " .. id)
  end

  setup(function()
    mock = proc.mock()
    local port, dir = proc.free_port(), proc.tmpdir()
    access_log, error_log = dir .. "/access.log", dir .. "/error.log"
    proc.write_file(dir .. "/redact-key", HASH_KEY .. "\n")
    gw = proc.gateway({ port = port, dir = dir, policy = policy(mock.url, dir .. "/redact-key"),
      config = { log = { access = access_log, error = error_log, level = "debug" },
                 secret_dirs = { dir } } })
  end)

  teardown(function()
    -- whatever the specs did, no value reached either log
    assert_clean(proc.read_file(access_log) or "", "the access log")
    assert_clean((proc.read_file(error_log) or "") .. gw:log(), "the error log")
    proc.stop_all()
  end)

  before_each(function()
    assert(http.request(mock.port, { method = "DELETE", path = "/mock/requests" }))
  end)

  it("sends placeholders upstream for values in the system prompt, parts and tool arguments", function()
    local res = post("/v1/chat/completions", { model = "mock-model", messages = {
      { role = "system", content = "Escalations go to " .. EMAIL .. " or " .. PHONE },
      { role = "user", content = { { type = "text", text = "Refund card " .. CARD .. " to " .. IBAN } } },
      { role = "assistant", content = json.null, tool_calls = { { id = "c1", type = "function",
        ["function"] = { name = "notify", arguments = json.encode({ to = EMAIL, key = KEY }) } } } },
      { role = "tool", tool_call_id = "c1", content = "sent" },
    } }, { ["x-request-id"] = "redact-e2e-chat" })
    assert.are.equal(200, res.status, res.body)
    local list = received()
    assert.are.equal(1, #list)
    local body = list[1].body
    assert_clean(body, "the provider's request")
    local sent = json.decode(body)
    assert.are.equal("Escalations go to [EMAIL_1] or [PHONE_1]", sent.messages[1].content)
    local h = sent.messages[2].content[1].text:match("^Refund card %[CREDIT_CARD:(%x+)%] to %[IBAN_1%]$")
    assert.are.equal(require("sluice.hash").hmac_sha256(HASH_KEY, "CREDIT_CARD:5555555555554444"):sub(1, 12), h)
    assert.are.same({ to = "[EMAIL_1]", key = "[OPENAI_KEY_1]" },
      json.decode(sent.messages[3].tool_calls[1]["function"].arguments))
    local line = json.decode(access_line("redact-e2e-chat"))
    assert.are.same({ EMAIL = 2, PHONE = 1, CREDIT_CARD = 1, IBAN = 1, OPENAI_KEY = 1 },
      line.annotations.redact.redactions)
    assert.are.same({ plugin = "redact", outcome = "modify",
      reason = "redacted 2 EMAIL, 1 PHONE, 1 CREDIT_CARD, 1 IBAN, 1 OPENAI_KEY" }, line.decisions[1])
  end)

  it("redacts an Anthropic request's system prompt and tool input before translation", function()
    local res = post("/v1/messages", { model = "mock-model", max_tokens = 32,
      system = "Customer phone " .. PHONE,
      messages = {
        { role = "user", content = "I am " .. EMAIL },
        { role = "assistant", content = { { type = "tool_use", id = "t1", name = "pay",
          input = { iban = IBAN } } } },
        { role = "user", content = { { type = "tool_result", tool_use_id = "t1", content = "ok" } } },
      } }, { ["anthropic-version"] = "2023-06-01" })
    assert.are.equal(200, res.status, res.body)
    local list = received()
    assert.are.equal(1, #list)
    assert_clean(list[1].body, "the provider's request")
    assert.truthy(list[1].body:find("[PHONE_1]", 1, true), list[1].body)
    assert.truthy(list[1].body:find("[IBAN_1]", 1, true), list[1].body)
  end)

  it("redacts a 40 KB private key, a UTF-8 address, the end-user id and escaped tool arguments", function()
    local pem = "-----BEGIN PRIVATE KEY-----\n" .. ("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"):rep(1300)
      .. "-----END PRIVATE KEY-----"
    local res = post("/v1/chat/completions", { model = "mock-model", user = EMAIL, messages = {
      { role = "user", content = "key:\n" .. pem .. "\nfrom josé.núñez@empresa.es" },
      { role = "assistant", content = json.null, tool_calls = { { id = "c1", type = "function",
        ["function"] = { name = "notify", arguments = '{"to":"dana.scully\\u0040fbi.example.gov"}' } } } },
      { role = "tool", tool_call_id = "c1", content = "sent" },
    } })
    assert.are.equal(200, res.status, res.body)
    local body = received()[1].body
    assert_clean(body, "the provider's request")
    assert.is_nil(body:find("MIIEvQIBADANBgkq", 1, true))
    assert.is_nil(body:find("josé", 1, true))
    local sent = json.decode(body)
    assert.are.equal("key:\n[PRIVATE_KEY_1]\nfrom [EMAIL_1]", sent.messages[1].content)
    assert.are.same({ to = "[EMAIL_2]" }, json.decode(sent.messages[2].tool_calls[1]["function"].arguments))
    assert.are.equal("[EMAIL_2]", sent.user)
  end)

  it("redacts embeddings input", function()
    local res = post("/v1/embeddings", { model = "mock-model", input = { "mail " .. EMAIL, "plain" } })
    assert.are.equal(200, res.status, res.body)
    local sent = json.decode(received()[1].body)
    assert.are.same({ "mail [EMAIL_1]", "plain" }, sent.input)
  end)

  it("refuses a class in block mode with 400 before the provider, naming the class only", function()
    local res = post("/v1/chat/completions", { model = "mock-model",
      messages = { { role = "user", content = "my SSN is " .. SSN } } })
    assert.are.equal(400, res.status, res.body)
    local e = assert(http.error_of(res))
    assert.are.equal("sensitive_data_blocked", e.code)
    assert.matches("US social security number (SSN)", e.message, 1, true)
    assert.is_nil(res.body:find(SSN, 1, true))
    assert.are.same({}, received())
  end)

  it("redacts a whole answer", function()
    local res = post("/v1/chat/completions", { model = "mock-model",
      messages = { { role = "user", content = "hi" } } })
    assert.are.equal(200, res.status, res.body)
    assert.are.equal("Hello from the [PRODUCT_1] provider.",
      json.decode(res.body).choices[1].message.content)
  end)

  it("redacts a value split across two events of a streamed answer", function()
    local res = post("/v1/chat/completions", { model = "mock-model", stream = true,
      messages = { { role = "user", content = "hi" } } },
      { ["x-mock-chunks"] = "7", ["x-request-id"] = "redact-e2e-stream" })
    assert.are.equal(200, res.status, res.body)
    local text, events = {}, 0
    for data in res.body:gmatch("data: ([^\n]*)\n\n") do
      events = events + 1
      if data ~= "[DONE]" then
        for _, ch in ipairs(json.decode(data).choices or {}) do
          if ch.delta and type(ch.delta.content) == "string" then text[#text + 1] = ch.delta.content end
        end
      end
    end
    assert.are.equal("Hello from the [PRODUCT_1] provider.", table.concat(text))
    assert.is_nil(res.body:find("sluice", 1, true), res.body)
    assert.matches("data: %[DONE%]\n\n$", res.body)
    local line = json.decode(access_line("redact-e2e-stream"))
    assert.are.same({ PRODUCT = 1 }, line.annotations.redact.output_redactions)
  end)
end)
