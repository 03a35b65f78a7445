-- End-to-end: the OpenAI front door through the model catalog — the
-- models a client may call, unknown models refused, bad JSON refused with
-- its position, public names in, provider names upstream, public names and
-- usage back, streams translated event by event.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"
local json = require "sluice.json"

local function policy(url)
  return ([[
backends:
  mock: { provider: openai, url: "%s" }
  other: { provider: openai_compat, url: "%s" }
default_backend: mock
models:
  chat-fast:
    targets: [ { backend: mock, model: mock-model } ]
    aliases: [fast]
  chat-other:
    targets: [ { backend: other, model: small-1 } ]
]]):format(url, url)
end

local function post(port, path, body, headers)
  local h = { ["content-type"] = "application/json" }
  for k, v in pairs(headers or {}) do h[k] = v end
  return assert(http.request(port, { method = "POST", path = path, headers = h,
    body = type(body) == "table" and json.encode(body) or body }))
end

local function sse_events(body)
  local out = {}
  for data in body:gmatch("data: ([^\n]*)\n\n") do out[#out + 1] = data end
  return out
end

describe("the OpenAI front door", function()
  local mock, gw

  setup(function()
    mock = proc.mock()
    gw = proc.gateway({ policy = policy(mock.url) })
  end)

  teardown(function() proc.stop_all() end)

  it("lists exactly the catalog's models at GET /v1/models", function()
    local res = assert(http.request(gw.port, { method = "GET", path = "/v1/models" }))
    assert.are.equal(200, res.status)
    local j = json.decode(res.body)
    assert.are.equal("list", j.object)
    local ids = {}
    for _, m in ipairs(j.data) do ids[#ids + 1] = m.id end
    assert.are.same({ "chat-fast", "chat-other" }, ids)
  end)

  it("answers 404 model_not_found for a model outside the catalog", function()
    local before = http.mock_stats(mock.port).requests
    local res = post(gw.port, "/v1/chat/completions", { model = "gpt-5", messages = {} })
    assert.are.equal(404, res.status)
    local e = http.error_of(res)
    assert.are.equal("model_not_found", e.code)
    assert.matches("gpt-5", e.message, 1, true)
    -- the second stats call is the only new request the mock saw
    assert.are.equal(before + 1, http.mock_stats(mock.port).requests)
  end)

  it("answers 400 with the parse position for malformed JSON", function()
    local res = post(gw.port, "/v1/chat/completions", '{"model": "fast", "messages": [}')
    assert.are.equal(400, res.status)
    local e = http.error_of(res)
    assert.are.equal("invalid_json", e.code)
    assert.matches("at byte 32 (line 1, column 32)", e.message, 1, true)
  end)

  it("sends the provider's model upstream and answers with the public name", function()
    local res = post(gw.port, "/v1/chat/completions",
      { model = "fast", messages = { { role = "user", content = "hi" } } })
    assert.are.equal(200, res.status)
    assert.are.equal("chat-fast", res.headers["x-sluice-model"])
    assert.are.equal("mock", res.headers["x-sluice-backend"])
    local j = json.decode(res.body)
    assert.are.equal("chat-fast", j.model)
    assert.are.equal("Hello from the sluice mock provider.", j.choices[1].message.content)
    assert.are.equal(7, j.usage.completion_tokens)
  end)

  it("routes each public model to its own backend", function()
    local res = post(gw.port, "/v1/chat/completions",
      { model = "chat-other", messages = { { role = "user", content = "hi" } } })
    assert.are.equal(200, res.status)
    assert.are.equal("other", res.headers["x-sluice-backend"])
    assert.are.equal("chat-other", json.decode(res.body).model)
  end)

  it("streams with the public name and strips the usage chunk nobody asked for", function()
    local res = post(gw.port, "/v1/chat/completions",
      { model = "fast", stream = true, messages = { { role = "user", content = "hi" } } })
    assert.are.equal(200, res.status)
    local evs = sse_events(res.body)
    assert.are.equal("[DONE]", evs[#evs])
    local text = {}
    for i = 1, #evs - 1 do
      local c = json.decode(evs[i])
      assert.are.equal("chat-fast", c.model)
      assert.is_nil(c.usage, "a usage chunk reached a client that did not ask")
      local d = c.choices[1] and c.choices[1].delta
      if d and d.content then text[#text + 1] = d.content end
    end
    assert.are.equal("Hello from the sluice mock provider.", table.concat(text))
  end)

  it("keeps the usage chunk when the client asked for it", function()
    local res = post(gw.port, "/v1/chat/completions",
      { model = "fast", stream = true, stream_options = { include_usage = true },
        messages = { { role = "user", content = "hi" } } })
    local evs = sse_events(res.body)
    local usage
    for i = 1, #evs - 1 do
      local c = json.decode(evs[i])
      if c.usage and c.usage ~= json.null then usage = c.usage end
    end
    assert.is_not_nil(usage)
    assert.are.equal(7, usage.completion_tokens)
  end)

  it("answers 502 when the backend's answer cannot be read, and keeps serving", function()
    local res = post(gw.port, "/v1/chat/completions",
      { model = "fast", messages = { { role = "user", content = "hi" } } },
      { ["x-mock-fault"] = "garbage-body" })
    assert.are.equal(502, res.status)
    assert.are.equal("upstream_invalid_response", http.error_of(res).code)
    res = post(gw.port, "/v1/chat/completions",
      { model = "fast", messages = { { role = "user", content = "hi" } } })
    assert.are.equal(200, res.status)
  end)

  it("passes the backend's error through in the OpenAI shape", function()
    local res = post(gw.port, "/v1/chat/completions",
      { model = "fast", messages = { { role = "user", content = "hi" } } },
      { ["x-mock-status"] = "429", ["x-mock-retry-after"] = "3" })
    assert.are.equal(429, res.status)
    assert.are.equal("3", res.headers["retry-after"])
    assert.is_not_nil(http.error_of(res).message)
  end)
end)

describe("the front door with an Anthropic backend", function()
  local mock, gw

  setup(function()
    mock = proc.mock()
    gw = proc.gateway({ policy = ([[
backends:
  an: { provider: anthropic, url: "%s" }
default_backend: an
models:
  claude: { targets: [ { backend: an, model: claude-3-5-haiku } ] }
]]):format(mock.url) })
  end)
  teardown(function() proc.stop_all() end)

  it("refuses a feature the provider lacks with 400 naming it", function()
    local res = post(gw.port, "/v1/chat/completions",
      { model = "claude", messages = { { role = "user", content = "hi" } },
        response_format = { type = "json_object" } })
    assert.are.equal(400, res.status)
    local e = http.error_of(res)
    assert.are.equal("unsupported_feature", e.code)
    assert.matches("anthropic", e.message, 1, true)
    assert.matches("response_format", e.message, 1, true)
  end)

  it("does not pass other /v1 calls to a backend of another API family", function()
    local res = assert(http.request(gw.port, { method = "GET", path = "/v1/files" }))
    assert.are.equal(404, res.status)
    assert.are.equal("not_found", http.error_of(res).code)
  end)
end)
describe("token usage", function()
  local mock, gw

  setup(function()
    mock = proc.mock()
    gw = proc.gateway({
      config = { plugin_dirs = { io.popen("pwd"):read("*l") .. "/spec/fixtures/plugins" } },
      policy = ([[
backends:
  oa: { provider: openai, url: "%s" }
models:
  m-openai: { targets: [ { backend: oa, model: gpt-4o-mini } ] }
plugins:
  - name: usage-log
]]):format(mock.url) })
  end)
  teardown(function() proc.stop_all() end)

  local function usage_lines()
    local out = {}
    for line in (gw:log() or ""):gmatch("[^\n]+") do
      local p, c, src = line:match("usage prompt=(%d+) completion=(%d+) source=(%a+)")
      if p then out[#out + 1] = { tonumber(p), tonumber(c), src } end
    end
    return out
  end

  it("reaches ctx.usage from the provider, whole and streamed", function()
    post(gw.port, "/v1/chat/completions", { model = "m-openai", messages = { { role = "user", content = "hi" } } })
    post(gw.port, "/v1/chat/completions", { model = "m-openai", stream = true,
      messages = { { role = "user", content = "hi" } } })
    proc.sleep(0.3)
    local lines = usage_lines()
    assert.are.equal(2, #lines)
    for _, l in ipairs(lines) do
      assert.is_true(l[1] > 0)
      assert.are.equal(7, l[2])
      assert.are.equal("reported", l[3])
    end
  end)
end)
