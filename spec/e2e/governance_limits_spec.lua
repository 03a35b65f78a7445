-- End-to-end: request-limits, prompt-guard and moderation-capture in the
-- real gateway in front of the shipped mock. Limits refuse or lower before
-- anything leaves, headers that must stay inside are stripped, a forbidden
-- prompt never reaches a provider, and a provider's safety verdict (the
-- mock's x-mock-content-filter) withholds the answer — whole or streamed —
-- and reaches the audit record, through the Azure and Gemini adapters.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"
local json = require "sluice.json"

local KEY = "spec-provider-key-7d1e"

local function policy(url)
  return ([[
backends:
  oai: { provider: openai, url: "%s" }
  az: { provider: azure, url: "%s", credentials: "env:SLUICE_SPEC_KEY" }
  gem: { provider: gemini, url: "%s", credentials: "env:SLUICE_SPEC_KEY" }
default_backend: oai
models:
  chat-oai: { targets: [ { backend: oai, model: mock-model } ] }
  chat-az: { targets: [ { backend: az, model: prod-4o } ] }
  chat-gem: { targets: [ { backend: gem, model: gemini-2.0-flash } ] }
plugins:
  - name: request-limits
    config:
      global:
        required_headers: [x-owning-team]
        max_messages: 4
        max_prompt_tokens: 200
        max_tokens: 100
      teams:
        batch: { max_tokens: 1000, max_tokens_mode: reject }
  - name: prompt-guard
    config:
      rules:
        - name: no-credentials
          pattern: 'password\s*[:=]'
          reason: credentials must not be sent to a model
        - name: competitor
          pattern: 'acme corp'
          action: flag
          reason: mentions a competitor
  - name: moderation-capture
    config: { action: deny, threshold: medium, deny_status: 400 }
]]):format(url, url, url)
end

describe("governance limits through the gateway", function()
  local mock, gw, access_log

  setup(function()
    mock = proc.mock()
    local port, dir = proc.free_port(), proc.tmpdir()
    access_log = dir .. "/access.log"
    os.execute("mkdir -p " .. proc.quote(dir .. "/policies"))
    local cfg = proc.merge(proc.default_config(port), { log = { access = access_log, level = "warn" } })
    proc.write_file(dir .. "/sluice.yaml", proc.yaml(cfg))
    proc.write_file(dir .. "/policies/default.yaml", policy(mock.url))
    local cmd = "env SLUICE_SPEC_KEY=" .. KEY .. " " .. proc.sluice_cmd({ "run", "-c", dir .. "/sluice.yaml" })
    gw = { port = port, proc = proc.spawn(cmd, dir, "sluice-" .. port) }
    proc.wait_port(gw.proc, port)
  end)

  teardown(function() proc.stop_all() end)

  before_each(function()
    assert(http.request(mock.port, { method = "DELETE", path = "/mock/requests" }))
  end)

  -- What the mock received since the last before_each.
  local function received()
    local res = assert(http.request(mock.port, { path = "/mock/requests" }))
    return json.decode(res.body).requests
  end

  local function chat(body, headers)
    local h = { ["content-type"] = "application/json", ["x-owning-team"] = "search" }
    for k, v in pairs(headers or {}) do h[k] = v or nil end
    body.model = body.model or "chat-oai"
    body.messages = body.messages or { { role = "user", content = "hi" } }
    return assert(http.request(gw.port, { method = "POST", path = "/v1/chat/completions",
      headers = h, body = json.encode(body) }))
  end

  -- The access log line of a request id (written every 200 ms).
  local function audit_of(id)
    local deadline = proc.now() + 3 * proc.slow
    repeat
      for line in (proc.read_file(access_log) or ""):gmatch("[^\n]+") do
        if line:find(id, 1, true) then return json.decode(line) end
      end
      proc.sleep(0.1)
    until proc.now() > deadline
    error("request " .. id .. " is not in the access log")
  end

  local function decision_of(rec, plugin)
    for _, d in ipairs(rec.decisions or {}) do
      if d.plugin == plugin then return d end
    end
  end

  describe("request-limits", function()
    it("refuses a request without the owning-team header before it leaves", function()
      local res = chat({}, { ["x-owning-team"] = false })
      assert.are.equal(400, res.status, res.body)
      local e = http.error_of(res)
      assert.are.equal("missing_header", e.code)
      assert.matches("x-owning-team", e.message, 1, true)
      assert.are.same({}, received())
    end)

    it("refuses too many messages with 400 and a long prompt with 413", function()
      local msgs = {}
      for i = 1, 5 do msgs[i] = { role = "user", content = "hi" } end
      local res = chat({ messages = msgs })
      assert.are.equal(400, res.status)
      assert.are.equal("too_many_messages", http.error_of(res).code)
      res = chat({ messages = { { role = "user", content = ("x"):rep(1000) } } })
      assert.are.equal(413, res.status)
      assert.are.equal("prompt_too_long", http.error_of(res).code)
      assert.are.same({}, received())
    end)

    it("lowers max_tokens to the cap, strips cookies and internal headers, and records it", function()
      local res = chat({ max_tokens = 5000 }, { cookie = "session=s3cr3t", ["x-internal-user"] = "u-42" })
      assert.are.equal(200, res.status, res.body)
      local got = received()
      assert.are.equal(1, #got)
      assert.are.equal(100, json.decode(got[1].body).max_tokens)
      for _, h in ipairs(got[1].headers) do
        assert.is_nil(({ cookie = true, ["x-internal-user"] = true })[h[1]:lower()], h[1] .. " reached the provider")
      end
      local rec = audit_of(res.headers["x-request-id"])
      local d = assert(decision_of(rec, "request-limits"))
      assert.are.equal("modify", d.outcome)
      assert.is_nil(json.encode(rec):find("s3cr3t", 1, true))
    end)

  end)

  describe("prompt-guard", function()
    it("refuses a forbidden prompt with 400 prompt_blocked, without echoing it", function()
      local res = chat({ messages = { { role = "user", content = "password: hunter2" } } })
      assert.are.equal(400, res.status)
      local e = http.error_of(res)
      assert.are.equal("prompt_blocked", e.code)
      assert.matches("'no-credentials'", e.message, 1, true)
      assert.is_nil(res.body:find("hunter2", 1, true))
      assert.are.same({}, received())
    end)

    it("flags a prompt and lets it through, with the flag in the audit record", function()
      local res = chat({ messages = { { role = "user", content = "compare with Acme Corp" } } })
      assert.are.equal(200, res.status)
      local rec = audit_of(res.headers["x-request-id"])
      assert.are.equal("flag", decision_of(rec, "prompt-guard").outcome)
      assert.are.same({ "competitor" }, rec.annotations["prompt-guard"].prompt_flags)
    end)
  end)

  describe("moderation-capture", function()
    it("records an all-clear Azure verdict and serves the answer", function()
      local res = chat({ model = "chat-az" })
      assert.are.equal(200, res.status, res.body)
      assert.are.equal("Hello from the sluice mock provider.", json.decode(res.body).choices[1].message.content)
      local m = audit_of(res.headers["x-request-id"]).annotations["moderation-capture"].moderation
      assert.are.equal("azure", m.source)
      assert.is_false(m.flagged)
      assert.are.equal("safe", m.categories.hate.severity)
    end)

    it("withholds an Azure answer its content filter flagged, and records why", function()
      local res = chat({ model = "chat-az" }, { ["x-mock-content-filter"] = "hate" })
      local e = assert(http.error_of(res), res.body)
      assert.are.equal("content_filtered", e.code)
      assert.is_nil(res.body:find("Hello from", 1, true))
      local rec = audit_of(res.headers["x-request-id"])
      local d = decision_of(rec, "moderation-capture")
      assert.are.equal("deny", d.outcome)
      assert.matches("hate high", d.reason, 1, true)
      local m = rec.annotations["moderation-capture"].moderation
      assert.is_true(m.blocked)
      assert.are.same({ severity = "high", filtered = true }, m.categories.hate)
    end)

    it("answers a withheld whole answer with the configured status", function()
      local res = chat({ model = "chat-az" }, { ["x-mock-content-filter"] = "violence" })
      assert.are.equal(400, res.status)
    end)

    it("withholds a Gemini answer whose prompt was blocked", function()
      local res = chat({ model = "chat-gem" }, { ["x-mock-content-filter"] = "prompt:dangerous" })
      assert.are.equal("content_filtered", assert(http.error_of(res), res.body).code)
      local m = audit_of(res.headers["x-request-id"]).annotations["moderation-capture"].moderation
      assert.are.equal("gemini", m.source)
      assert.are.equal("SAFETY", m.prompt.reason)
      assert.are.equal("high", m.prompt.categories.dangerous.severity)
    end)

    it("cuts a Gemini stream at the flagged event with an error event and no [DONE]", function()
      local res = chat({ model = "chat-gem", stream = true },
                       { ["x-mock-content-filter"] = "sexual", ["x-mock-chunks"] = "3" })
      assert.are.equal(200, res.status)
      assert.matches('"content":"Hello"', res.body, 1, true)
      assert.matches('"code":"content_filtered"', res.body, 1, true)
      assert.is_nil(res.body:find("[DONE]", 1, true))
      assert.is_nil(res.body:find('"content":" the"', 1, true)) -- the flagged last piece
      local rec = audit_of(res.headers["x-request-id"])
      assert.are.equal("deny", decision_of(rec, "moderation-capture").outcome)
      assert.are.equal("high", rec.annotations["moderation-capture"].moderation.categories.sexual.severity)
    end)

    it("serves an unflagged Gemini stream whole", function()
      local res = chat({ model = "chat-gem", stream = true })
      assert.are.equal(200, res.status)
      assert.matches("data: [DONE]", res.body, 1, true)
      assert.is_nil(res.body:find("content_filtered", 1, true))
    end)
  end)
end)
