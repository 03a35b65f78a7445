-- End-to-end: key-auth in the real binary in front of the shipped mock.
-- Callers without a key, with an unknown key, with a disabled consumer's or
-- a revoked key are refused before anything reaches the provider; a good
-- key is accepted from each of the SDKs' headers (the Anthropic SDK drives
-- /v1/messages itself), and the gateway key reaches neither the provider
-- (the mock records what it received) nor the gateway's logs.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"
local json = require "sluice.json"

local SDK_DIR = "spec/sdk"
local PROVIDER_KEY = "sk-provider-key-from-policy"
local CHAT_KEY = "sk-gw-e2e-chat-7f3a9c"
local ROTATED_KEY = "sk-gw-e2e-chat-retiring-41d2"
local OFF_KEY = "sk-gw-e2e-disabled-app-90be"
local WRONG_KEY = "sk-gw-e2e-not-issued-5e11"
local ALL_KEYS = { CHAT_KEY, ROTATED_KEY, OFF_KEY, WRONG_KEY }

local hash_of = proc.hash_key

local function policy(mock_url)
  return ([[
backends:
  mock: { provider: openai, url: "%s", region: local, credentials: "env:SPEC_PROVIDER_KEY" }
default_backend: mock
models:
  mock-model: { targets: [ { backend: mock, model: mock-model } ] }
plugins:
  - name: key-auth
    config:
      key_headers: [api-key, x-api-key, x-gateway-key]
      consumers:
        support-chat:
          team: customer-care
          data_class: confidential
          keys:
            - { hash: "%s", name: current }
            - { hash: "%s", name: retiring, revoked: true }
        retired-app:
          disabled: true
          keys: [ { hash: "%s" } ]
]]):format(mock_url, hash_of(CHAT_KEY), hash_of(ROTATED_KEY), hash_of(OFF_KEY))
end

local CHAT = { model = "mock-model", messages = { { role = "user", content = "hi" } } }
local MESSAGES = { model = "mock-model", max_tokens = 32,
                   messages = { { role = "user", content = "hi" } } }

describe("key-auth in the gateway", function()
  local mock, gw, access_log

  local function post(path, body, headers)
    local h = { ["content-type"] = "application/json" }
    for k, v in pairs(headers or {}) do h[k] = v end
    return assert(http.request(gw.port, { method = "POST", path = path, headers = h,
                                          body = json.encode(body) }))
  end

  local function clear_mock()
    local res = assert(http.request(mock.port, { method = "DELETE", path = "/mock/requests" }))
    assert.are.equal(200, res.status)
  end

  -- What the provider received since the last clear_mock().
  local function received()
    local res = assert(http.request(mock.port, { path = "/mock/requests" }))
    assert.are.equal(200, res.status)
    return json.decode(res.body).requests
  end

  -- No gateway key anywhere in what the provider received.
  local function assert_no_gateway_key(list)
    for _, r in ipairs(list) do
      local text = r.path .. "\n" .. r.body
      for _, h in ipairs(r.headers) do text = text .. "\n" .. h[1] .. ": " .. h[2] end
      for _, k in ipairs(ALL_KEYS) do
        assert.is_nil(text:find(k, 1, true), "the provider received a gateway key:\n" .. text)
      end
    end
  end

  local function header_of(r, name)
    for _, h in ipairs(r.headers) do
      if h[1]:lower() == name then return h[2] end
    end
  end

  setup(function()
    mock = proc.mock()
    local port, dir = proc.free_port(), proc.tmpdir()
    access_log = dir .. "/access.log"
    os.execute("mkdir -p " .. proc.quote(dir .. "/policies"))
    local cfg = proc.merge(proc.default_config(port),
      { log = { access = access_log, level = "debug" } })
    proc.write_file(dir .. "/sluice.yaml", proc.yaml(cfg))
    proc.write_file(dir .. "/policies/default.yaml", policy(mock.url))
    local cmd = "env SPEC_PROVIDER_KEY=" .. PROVIDER_KEY .. " " ..
      proc.sluice_cmd({ "run", "-c", dir .. "/sluice.yaml" })
    gw = { port = port, proc = proc.spawn(cmd, dir, "sluice-" .. port) }
    proc.wait_port(gw.proc, port)
  end)

  teardown(function() proc.stop_all() end)

  before_each(clear_mock)

  it("refuses a request without a key with 401 missing_api_key and www-authenticate", function()
    local res = post("/v1/chat/completions", CHAT)
    assert.are.equal(401, res.status, res.body)
    assert.are.equal("Bearer", res.headers["www-authenticate"])
    local e = assert(http.error_of(res), res.body)
    assert.are.equal("missing_api_key", e.code)
    assert.are.equal("invalid_request_error", e.type)
    assert.are.same({}, received())
  end)

  it("refuses an unknown key with 401 invalid_api_key, without echoing it", function()
    local res = post("/v1/chat/completions", CHAT, { authorization = "Bearer " .. WRONG_KEY })
    assert.are.equal(401, res.status, res.body)
    assert.are.equal("invalid_api_key", http.error_of(res).code)
    assert.is_nil(res.body:find(WRONG_KEY, 1, true))
    assert.are.same({}, received())
  end)

  it("refuses a disabled consumer's key and a revoked key with 403", function()
    local off = post("/v1/chat/completions", CHAT, { authorization = "Bearer " .. OFF_KEY })
    assert.are.equal(403, off.status, off.body)
    assert.are.equal("consumer_disabled", http.error_of(off).code)
    local revoked = post("/v1/chat/completions", CHAT, { ["api-key"] = ROTATED_KEY })
    assert.are.equal(403, revoked.status, revoked.body)
    assert.are.equal("api_key_revoked", http.error_of(revoked).code)
    assert.are.same({}, received())
  end)

  it("serves a good Bearer key, and the provider gets its own key, not the gateway's", function()
    local res = post("/v1/chat/completions", CHAT, { authorization = "Bearer " .. CHAT_KEY })
    assert.are.equal(200, res.status, res.body)
    assert.are.equal("chatcmpl-mock", json.decode(res.body).id)
    local list = received()
    assert.are.equal(1, #list)
    assert.are.equal("Bearer " .. PROVIDER_KEY, header_of(list[1], "authorization"))
    assert_no_gateway_key(list)
  end)

  it("serves a good key in api-key, and in x-api-key on the Anthropic door", function()
    local az = post("/v1/chat/completions", CHAT, { ["api-key"] = CHAT_KEY })
    assert.are.equal(200, az.status, az.body)
    local an = post("/v1/messages", MESSAGES, { ["x-api-key"] = CHAT_KEY,
                                                ["anthropic-version"] = "2023-06-01" })
    assert.are.equal(200, an.status, an.body)
    assert.are.equal("message", json.decode(an.body).type)
    local list = received()
    assert.are.equal(2, #list)
    assert_no_gateway_key(list)
    assert.is_nil(header_of(list[1], "api-key"))
    assert.is_nil(header_of(list[2], "x-api-key"))
  end)

  it("removes a key header the gateway itself would forward, on a plain proxied path", function()
    -- /v1/echo is outside the AI front doors: the client's headers pass
    -- through, so only key-auth keeps x-gateway-key from the backend.
    local res = assert(http.request(gw.port, { path = "/v1/echo",
      headers = { ["x-gateway-key"] = CHAT_KEY, ["x-team"] = "care" } }))
    assert.are.equal(200, res.status, res.body)
    local seen = http.echo_headers(res)
    assert.is_nil(seen["x-gateway-key"])
    assert.are.same({ "care" }, seen["x-team"])
    assert.is_nil(res.body:find(CHAT_KEY, 1, true))
    local anon = assert(http.request(gw.port, { path = "/v1/echo" }))
    assert.are.equal(401, anon.status)
  end)

  it("serves the Anthropic SDK on /v1/messages with its apiKey as the gateway key", function()
    proc.ensure_sdks()
    local script = [[
import Anthropic from "@anthropic-ai/sdk";
const base = process.env.GW_BASE;
const ask = [{ role: "user", content: "hi" }];
const good = new Anthropic({ baseURL: base, apiKey: process.env.GW_KEY, maxRetries: 0 });
const r = await good.messages.create({ model: "mock-model", max_tokens: 32, messages: ask });
let denied = null;
try {
  const bad = new Anthropic({ baseURL: base, apiKey: process.env.GW_WRONG, maxRetries: 0 });
  await bad.messages.create({ model: "mock-model", max_tokens: 32, messages: ask });
} catch (e) { denied = e.status; }
console.log(JSON.stringify({ text: r.content[0].text, denied }));
]]
    local st, out = proc.run(("cd %s && GW_BASE=%s GW_KEY=%s GW_WRONG=%s timeout 60 node --input-type=module -e %s")
      :format(SDK_DIR, proc.quote("http://127.0.0.1:" .. gw.port), proc.quote(CHAT_KEY),
              proc.quote(WRONG_KEY), proc.quote(script)))
    assert.are.equal(0, st, out)
    local r = assert(json.decode(out:match("({.*})%s*$") or ""), out)
    assert.are.equal("Hello from the sluice mock provider.", r.text)
    assert.are.equal(401, r.denied)
    local list = received()
    assert.are.equal(1, #list)
    assert_no_gateway_key(list)
  end)

  it("writes no key to the access log or the error log", function()
    local ids = {}
    for _, h in ipairs({ { authorization = "Bearer " .. CHAT_KEY },
                         { authorization = "Bearer " .. WRONG_KEY },
                         { ["x-api-key"] = OFF_KEY }, { ["api-key"] = ROTATED_KEY } }) do
      ids[#ids + 1] = assert(post("/v1/chat/completions", CHAT, h).headers["x-request-id"])
    end
    -- the access log is flushed every 200 ms: wait for these four lines
    local deadline = proc.now() + 3 * proc.slow
    local text, missing
    repeat
      proc.sleep(0.1)
      text = proc.read_file(access_log) or ""
      missing = nil
      for _, id in ipairs(ids) do
        if not text:find(id, 1, true) then missing = id end
      end
    until not missing or proc.now() > deadline
    assert.is_nil(missing, "request " .. tostring(missing) .. " is not in the access log:\n" .. text)
    text = text .. proc.log(gw.proc)
    for _, k in ipairs(ALL_KEYS) do
      assert.is_nil(text:find(k, 1, true), "a gateway key is in the logs:\n" .. text)
    end
  end)
end)
