-- End-to-end: the quota plugin in a real gateway with two workers, against
-- the shipped mock. Counters are shared by the workers: 200 concurrent
-- clients get exactly the requests a limit allows and spend no more tokens
-- than it allows plus one request per worker; a team cut off at its cost
-- budget is served again in the next window; a limit of N serves exactly
-- N; a stream that crosses a hard token limit ends with a clean error event.
--
-- The consumer comes from x-test-* headers (spec/fixtures/quota), standing
-- in for an auth plugin.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"
local loadgen = require "spec.helpers.load"
local json = require "sluice.json"

local ROOT = io.popen("pwd"):read("*l")

-- 40 bytes of prompt: 10 tokens for the gateway's estimate and for the
-- mock's usage; the mock answers 7 completion tokens when not streaming.
local PROMPT = ("q"):rep(40)
local BODY = json.encode({ model = "chat-fast", max_tokens = 7,
                           messages = { { role = "user", content = PROMPT } } })
local TOKENS_PER_REQUEST = 17

local function policy(url, quota_config)
  return {
    backends = { mock = { provider = "openai", url = url } },
    default_backend = "mock",
    models = { ["chat-fast"] = { targets = { { backend = "mock", model = "mock-model" } } } },
    plugins = {
      { name = "test-consumer" },
      { name = "quota", config = quota_config },
    },
  }
end

local function gateway(mock, quota_config)
  return proc.gateway({
    policy = policy(mock.url, quota_config),
    config = { workers = 2,
               plugin_dirs = { ROOT .. "/plugins", ROOT .. "/spec/fixtures/quota" },
               -- 200 connections at once are read and reach the mock slowly
               -- under valgrind
               timeouts = { upstream_connect = math.ceil(2 * proc.slow) .. "s",
                            upstream_first_byte = math.ceil(5 * proc.slow) .. "s",
                            header_read = math.ceil(2 * proc.slow) .. "s",
                            body_read = math.ceil(2 * proc.slow) .. "s" } },
  })
end

local function post(port, headers, body)
  local h = { ["content-type"] = "application/json" }
  for k, v in pairs(headers or {}) do h[k] = v end
  return assert(http.request(port, { method = "POST", path = "/v1/chat/completions",
    headers = h, body = body or BODY }))
end

-- Do not start counting in the last seconds of a window.
local function settle_in_window(period, margin)
  local now = proc.now()
  local left = period - now % period
  if left < margin then proc.sleep(left + 0.05) end
end

-- `n` requests at once from curl --parallel; returns a map status → count.
local function burst(port, n, headers, dir)
  return loadgen.burst({ port }, n, headers, BODY, dir)
end

local function data_events(body)
  local out = {}
  for d in body:gmatch("data: ([^\n]*)\n\n") do out[#out + 1] = d end
  return out
end

describe("quota in a running gateway", function()
  local mock

  setup(function() mock = proc.mock() end)
  teardown(function() proc.stop_all() end)

  describe("under 200 concurrent clients", function()
    it("serves exactly the requests a limit allows, and the mock sees only those", function()
      local gw = gateway(mock, { limits = { { by = "team", requests = 50 } } })
      settle_in_window(60, 15)
      local before = http.mock_stats(mock.port).requests
      local codes = burst(gw.port, 200, { ["x-test-team"] = "burst-requests" }, gw.dir)
      assert.equals(50, codes[200])
      assert.equals(150, codes[429])
      -- the second stats call is the only other request the mock saw
      assert.equals(before + 50 + 1, http.mock_stats(mock.port).requests)
      gw:stop()
    end)

    it("spends no more tokens than the limit plus one request per worker", function()
      local limit = 1000
      local gw = gateway(mock, { limits = { { by = "team", tokens = limit } } })
      settle_in_window(60, 15)
      local before = http.mock_stats(mock.port).requests
      local codes = burst(gw.port, 200, { ["x-test-team"] = "burst-tokens" }, gw.dir)
      local served = codes[200] or 0
      assert.equals(200, served + (codes[429] or 0))
      assert.equals(before + served + 1, http.mock_stats(mock.port).requests)
      -- each reservation is 17 tokens and each request uses 17: a refusal
      -- means more than 1000 − 17 were spent or held
      assert.is_true(served * TOKENS_PER_REQUEST <= limit + 2 * TOKENS_PER_REQUEST,
        "spent " .. served * TOKENS_PER_REQUEST)
      assert.is_true(served >= math.floor(limit / TOKENS_PER_REQUEST),
        "served only " .. served)
      -- the counter holds exactly what was spent
      local probe = post(gw.port, { ["x-test-team"] = "burst-tokens" })
      assert.equals(429, probe.status)
      assert.equals(tostring(math.max(0, limit - served * TOKENS_PER_REQUEST)),
                    probe.headers["x-ratelimit-remaining-tokens"])
      gw:stop()
    end)
  end)

  it("cuts a team off at its cost budget and serves it again in the next window", function()
    -- $1 per 1M tokens: 17 micro-dollars a request, 20 reserved ahead
    -- (max_tokens 10); a budget of 50 serves two requests a window
    local gw = gateway(mock, { prices = { ["chat-fast"] = { input = 1, output = 1 } },
                               limits = { { by = "team", cost = 0.00005, period = "3s" } } })
    local body = json.encode({ model = "chat-fast", max_tokens = 10,
                               messages = { { role = "user", content = PROMPT } } })
    local who = { ["x-test-team"] = "finance" }
    settle_in_window(3, 2)
    assert.equals(200, post(gw.port, who, body).status)
    assert.equals(200, post(gw.port, who, body).status)
    local res = post(gw.port, who, body)
    assert.equals(429, res.status)
    assert.equals("cost_budget_exceeded", http.error_of(res).code)
    local retry = tonumber(res.headers["retry-after"])
    assert.is_true(retry >= 1 and retry <= 3, "retry-after " .. tostring(retry))
    -- another team is not affected
    assert.equals(200, post(gw.port, { ["x-test-team"] = "research" }, body).status)
    proc.sleep(3 - proc.now() % 3 + 0.1)
    assert.equals(200, post(gw.port, who, body).status)
    gw:stop()
  end)

  describe("on the limit", function()
    it("serves exactly N requests and refuses the next with Retry-After and x-ratelimit headers", function()
      local gw = gateway(mock, { limits = { { by = "team", requests = 5 } } })
      local who = { ["x-test-team"] = "exact" }
      settle_in_window(60, 5)
      for i = 1, 5 do
        local res = post(gw.port, who)
        assert.equals(200, res.status, "request " .. i)
        assert.equals("5", res.headers["x-ratelimit-limit-requests"])
        assert.equals(tostring(5 - i), res.headers["x-ratelimit-remaining-requests"])
      end
      local res = post(gw.port, who)
      assert.equals(429, res.status)
      local e = http.error_of(res)
      assert.equals("requests_limit_exceeded", e.code)
      assert.equals("rate_limit_error", e.type)
      local retry = tonumber(res.headers["retry-after"])
      assert.is_true(retry >= 1 and retry <= 60)
      assert.equals("5", res.headers["x-ratelimit-limit-requests"])
      assert.equals("0", res.headers["x-ratelimit-remaining-requests"])
      assert.matches("^%d[%dhm]*s$", res.headers["x-ratelimit-reset-requests"])
      gw:stop()
    end)

    it("serves a request whose tokens land exactly on the limit", function()
      -- two requests of 17 tokens reserved and used: 34 is the limit
      local gw = gateway(mock, { limits = { { by = "team", tokens = 2 * TOKENS_PER_REQUEST } } })
      local who = { ["x-test-team"] = "exact-tokens" }
      settle_in_window(60, 5)
      assert.equals(200, post(gw.port, who).status)
      local second = post(gw.port, who)
      assert.equals(200, second.status)
      assert.equals("0", second.headers["x-ratelimit-remaining-tokens"])
      local third = post(gw.port, who)
      assert.equals(429, third.status)
      assert.equals("tokens_limit_exceeded", http.error_of(third).code)
      assert.equals("34", third.headers["x-ratelimit-limit-tokens"])
      gw:stop()
    end)
  end)

  it("cuts a stream at a hard token limit with a clean final error event", function()
    -- 10 prompt tokens + 5 reserved; the stream is charged as it goes and
    -- crosses 40 tokens long before the mock's 60 pieces are sent
    local gw = gateway(mock, { default_completion_tokens = 5,
                               limits = { { by = "team", tokens = 40 } } })
    -- 60 pieces 50 ms apart: the whole answer takes the mock 3 s (under a
    -- wrapper such as valgrind the gateway is slower: the mock's answer is
    -- made longer to match, not slower, so the cut comes as soon)
    local who = { ["x-test-team"] = "streamer",
                  ["x-mock-chunks"] = tostring(math.floor(60 * proc.slow)),
                  ["x-mock-chunk-delay-ms"] = "50" }
    settle_in_window(60, 5)
    local body = json.encode({ model = "chat-fast", stream = true,
                               messages = { { role = "user", content = PROMPT } } })
    local started = proc.now()
    local res = post(gw.port, who, body)
    assert.equals(200, res.status)
    -- the cut ends the answer there: the gateway stops reading the backend
    -- instead of draining (and dropping) the rest of its 3 s stream
    assert.is_true(proc.now() - started < 2.0 * proc.slow, "the answer ended only after the backend's")
    local evs = data_events(res.body)
    assert.equals("[DONE]", evs[#evs])
    local err = json.decode(evs[#evs - 1]).error
    assert.equals("token_budget_exceeded", err.code)
    assert.equals("rate_limit_error", err.type)
    local text = {}
    for i = 1, #evs - 2 do
      local c = json.decode(evs[i])
      assert.is_nil(c.error)
      local d = c.choices[1] and c.choices[1].delta
      if d and d.content then text[#text + 1] = d.content end
    end
    text = table.concat(text)
    -- what reached the client fits in the 30 completion tokens left
    assert.is_true(#text > 0 and math.ceil(#text / 4) <= 30, "streamed " .. #text .. " bytes")
    assert.equals(1, select(2, res.body:gsub("data: %[DONE%]", "")))
    -- the team is over its limit now
    assert.equals(429, post(gw.port, { ["x-test-team"] = "streamer" }).status)
    gw:stop()
  end)

  it("settles a stream the client aborted with what was streamed, not what was reserved", function()
    local limit = 1000
    -- 10 prompt tokens + 500 reserved for an answer without max_tokens
    local gw = gateway(mock, { default_completion_tokens = 500,
                               limits = { { by = "team", tokens = limit } } })
    settle_in_window(60, 10)
    local body = json.encode({ model = "chat-fast", stream = true,
                               messages = { { role = "user", content = PROMPT } } })
    local c = assert(http.connect(gw.port))
    assert(c:send(http.request_bytes({ method = "POST", path = "/v1/chat/completions", body = body,
      headers = { ["content-type"] = "application/json", ["x-test-team"] = "quitter",
                  ["x-mock-chunks"] = "40", ["x-mock-chunk-delay-ms"] = "100" } })))
    local res = assert(c:read_head(5))
    assert.equals(200, res.status)
    local deadline = proc.now() + 5
    while select(2, c.buf:gsub('"content":"[^"]+"', "")) < 5 and proc.now() < deadline do
      c:fill(1)
    end
    local seen = 0
    for s in c.buf:gmatch('"content":"([^"]*)"') do seen = seen + #s end
    c:close()
    assert.is_true(seen > 0)
    proc.sleep(0.5) -- the gateway notices the client went away and settles
    local probe = post(gw.port, { ["x-test-team"] = "quitter" }) -- reserves 17
    assert.equals(200, probe.status)
    local charged = limit - TOKENS_PER_REQUEST - tonumber(probe.headers["x-ratelimit-remaining-tokens"])
    -- the prompt and at least what the client saw, far below the 510 reserved
    assert.is_true(charged >= 10 + math.ceil(seen / 4), "charged " .. charged .. ", seen " .. seen)
    assert.is_true(charged < 10 + 40 * 2, "charged " .. charged)
    gw:stop()
  end)
end)
