-- End-to-end: GET /metrics on the admin listener. Real binary, two mock
-- providers (one answers 503), key-auth naming the caller's team, the
-- fallback plugin moving each request to the healthy backend, and a policy
-- exception in force. After a scripted burst of traffic the scrape counts
-- exactly what happened: requests by route/backend/status/team, fall-backs
-- and upstream errors by backend, tokens by team and model, decisions by
-- plugin and outcome, the live policy version, the exception and the days
-- left to it. The scrape is Prometheus text, answered only to a token with
-- the read role.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"
local json = require "sluice.json"
local hash = require "sluice.hash"

local READ_TOKEN = "tok-metrics-reader-8c1d3f"
local APP_KEY = "sk-gw-metrics-claims-2b7e41"

local function day(offset)
  return os.date("!%Y-%m-%d", os.time() + offset * 86400)
end

local function policy(good, bad)
  return json.encode({
    backends = {
      good = { provider = "openai", url = good.url, region = "local" },
      bad = { provider = "openai", url = bad.url, region = "local" },
    },
    default_backend = "good",
    models = { chat = { targets = { { backend = "bad", model = "mock-model" },
                                    { backend = "good", model = "mock-model" } } } },
    exceptions = { {
      id = "EXC-METRICS-1", owner = "owner@example.com", reason = "spec",
      created = day(-10), expires = day(20), teams = { "claims" },
      grants = { models = { "chat" } },
    } },
    plugins = {
      { name = "key-auth", config = { consumers = { ["claims-bot"] = {
        team = "claims", keys = { { hash = "sha256:" .. hash.sha256(APP_KEY) } } } } } },
      { name = "fallback", config = { breaker = { enabled = false } } },
    },
  })
end

local function gateway(good, bad, metrics)
  local dir = proc.tmpdir()
  os.execute("mkdir -p " .. proc.quote(dir .. "/policies"))
  proc.write_file(dir .. "/policies/default.json", policy(good, bad))
  local aport = proc.free_port()
  local g = proc.gateway({ dir = dir, config = {
    workers = 2,
    metrics = metrics,
    admin = { listen = "127.0.0.1:" .. aport, state_dir = dir .. "/state",
              tokens = { { name = "prometheus", sha256 = hash.sha256(READ_TOKEN),
                           roles = { "read" } } } },
  } })
  proc.wait_port(g.proc, aport)
  g.aport = aport
  return g
end

local function chat(g, key)
  local h = { ["content-type"] = "application/json" }
  if key then h.authorization = "Bearer " .. key end
  local body = json.encode({ model = "chat", messages = { { role = "user", content = "hi" } } })
  return assert(http.request(g.port, { method = "POST", path = "/v1/chat/completions",
                                       headers = h, body = body }))
end

local function scrape(g, token)
  local h = {}
  if token ~= false then h.authorization = "Bearer " .. (token or READ_TOKEN) end
  return assert(http.request(g.aport, { path = "/metrics", headers = h }))
end

-- "name{labels}" → value, and the families' TYPE lines.
local function parse(text)
  local series, types = {}, {}
  for line in text:gmatch("[^\n]+") do
    local fam, kind = line:match("^# TYPE (%S+) (%S+)$")
    if fam then
      types[fam] = kind
    elseif not line:match("^#") then
      local key, v = line:match("^(%S+) (%S+)$")
      assert(key, "not a sample line: " .. line)
      series[key] = tonumber(v) or (v == "+Inf" and math.huge) or error("bad value: " .. line)
    end
  end
  return series, types
end

local function routed(g)
  local res = scrape(g)
  assert.equals(200, res.status, res.body)
  return res
end

describe("GET /metrics on the admin listener", function()
  local good, bad, g, other_status
  local N = 6

  setup(function()
    good = proc.mock()
    bad = proc.mock({ status = 503 })
    g = gateway(good, bad, { consumer_labels = true, max_series_per_metric = 200 })
    for _ = 1, N do
      local res = chat(g, APP_KEY)
      assert.equals(200, res.status, res.body)
      assert.equals("good", res.headers["x-sluice-backend"])
    end
    assert.equals(401, chat(g, nil).status)
    other_status = assert(http.request(g.port, { path = "/nowhere",
      headers = { authorization = "Bearer " .. APP_KEY } })).status
  end)

  teardown(function() proc.stop_all() end)

  it("answers Prometheus text only to a token with the read role", function()
    local res = routed(g)
    if not res then return end
    assert.equals(200, res.status, res.body)
    assert.matches("^text/plain; version=0.0.4", res.headers["content-type"])
    assert.equals(401, scrape(g, false).status)
    assert.equals(401, scrape(g, "not-a-token").status)
    local _, types = parse(res.body)
    assert.equals("counter", types.sluice_requests_total)
    assert.equals("histogram", types.sluice_request_duration_seconds)
    assert.equals("gauge", types.sluice_policy_info)
  end)

  it("counts requests by route, backend, status and team, and the fall-backs behind them", function()
    local res = routed(g)
    if not res then return end
    local s = parse(res.body)
    assert.equals(N, s['sluice_requests_total{route="chat",backend="good",status="200",team="claims"}'])
    assert.equals(1, s['sluice_requests_total{route="chat",status="401"}'])
    -- whether the gateway or the default backend answers an unknown path
    -- is the router's business: the request is counted either way
    local other_key, other_be
    for key in pairs(s) do
      local be = key:match('^sluice_requests_total{route="other",backend="(%w+)",status="'
                           .. other_status .. '",team="claims"}$')
      if be or key == 'sluice_requests_total{route="other",status="' .. other_status
                      .. '",team="claims"}' then
        other_key, other_be = key, be
      end
    end
    assert.equals(1, other_key and s[other_key], res.body)
    assert.equals(N, s['sluice_fallbacks_total{backend="bad"}'])
    assert.equals(N, s['sluice_upstream_errors_total{backend="bad",reason="status_5xx"}'])
    assert.is_nil(s['sluice_fallbacks_total{backend="good"}'])
    local by_good = N + (other_be == "good" and 1 or 0)
    assert.equals(by_good, s['sluice_request_duration_seconds_count{backend="good"}'])
    assert.equals(by_good, s['sluice_request_duration_seconds_bucket{backend="good",le="+Inf"}'])
    assert.equals(by_good, s['sluice_time_to_first_token_seconds_count{backend="good"}'])
    assert.is_true(s['sluice_time_to_first_token_seconds_sum{backend="good"}']
                   <= s['sluice_request_duration_seconds_sum{backend="good"}'])
  end)

  it("counts tokens by team, backend and model as the provider reported them", function()
    local res = routed(g)
    if not res then return end
    local s = parse(res.body)
    local prompt = s['sluice_tokens_total{team="claims",backend="good",model="chat",type="prompt"}']
    local completion = s['sluice_tokens_total{team="claims",backend="good",model="chat",type="completion"}']
    -- the mock reports the same usage for the same request: N equal parts
    local one = json.decode(chat(g, APP_KEY).body).usage
    assert.equals(N * one.prompt_tokens, prompt)
    assert.equals(N * one.completion_tokens, completion)
  end)

  it("counts each plugin's decisions by outcome", function()
    local res = routed(g)
    if not res then return end
    local s = parse(res.body)
    assert.equals(1, s['sluice_policy_decisions_total{plugin="key-auth",outcome="deny"}'])
    -- every served request fell back once: one "modify" decision each
    local served = s['sluice_requests_total{route="chat",backend="good",status="200",team="claims"}']
    assert.is_true(served >= N)
    assert.equals(served, s['sluice_policy_decisions_total{plugin="fallback",outcome="modify"}'])
  end)

  it("exposes every metric the shipped Grafana dashboard queries", function()
    local res = routed(g)
    if not res then return end
    local _, types = parse(res.body)
    local dash = json.decode(assert(proc.read_file("examples/grafana/sluice-dashboard.json")))
    local used, n = {}, 0
    local function walk(t)
      for k, v in pairs(t) do
        if k == "expr" and type(v) == "string" then
          for name in v:gmatch("sluice_[%w_]+") do
            name = name:gsub("_bucket$", ""):gsub("_sum$", ""):gsub("_count$", "")
            if not used[name] then used[name] = true; n = n + 1 end
          end
        elseif type(v) == "table" then
          walk(v)
        end
      end
    end
    walk(dash)
    assert.is_true(n >= 10, "the dashboard queries too few metrics to be a check")
    for name in pairs(used) do
      assert.is_truthy(types[name], "the dashboard queries " .. name .. ", which /metrics does not expose")
    end
  end)

  it("shows the live policy version and the exception in force with its days left", function()
    local res = routed(g)
    if not res then return end
    local s = parse(res.body)
    local st = json.decode(assert(http.request(g.aport, { path = "/admin/status",
      headers = { authorization = "Bearer " .. READ_TOKEN } })).body)
    assert.equals(1, s['sluice_policy_info{version="' .. st.version .. '"}'])
    assert.equals(1, s.sluice_exceptions_active)
    local days = s['sluice_exception_expiry_days{exception="EXC-METRICS-1"}']
    assert.is_true(days > 19 and days <= 20, tostring(days))
  end)
end)

describe("metrics without consumer labels (the default)", function()
  teardown(function() proc.stop_all() end)

  it("counts the same traffic with no team label anywhere", function()
    local good, bad = proc.mock(), proc.mock({ status = 503 })
    local g = gateway(good, bad, nil)
    assert.equals(200, chat(g, APP_KEY).status)
    local res = routed(g)
    if not res then return end
    local s = parse(res.body)
    assert.equals(1, s['sluice_requests_total{route="chat",backend="good",status="200"}'])
    assert.is_nil(res.body:find("team=", 1, true))
  end)
end)
