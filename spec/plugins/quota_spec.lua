-- quota_spec.lua — behaviour of the quota plugin through the real runtime:
-- windows, reservations settled at log, exact limits, cost budgets priced by
-- public model name, soft limits, streams charged as they go and cut.
-- Run from the repository root: ./build/sluice spec spec/plugins/quota_spec.lua
local t = require "sluice.test"
local json = require "sluice.json"
local socket = require "socket"

local MODELS = {
  ["chat-fast"] = { targets = { { backend = "mock", model = "mock-model" } }, aliases = { "fast" } },
  ["chat-big"] = { targets = { { backend = "mock", model = "big-model" } } },
}

-- sluice.shared lives as long as the process: every test counts for
-- identities of its own.
local seq = 0
local function fresh(name)
  seq = seq + 1
  return ("%s-%d-%d"):format(name, os.time(), seq)
end

local function chain(config)
  t.plugin_dirs = { "plugins", "spec/fixtures/quota" }
  return t.chain({ { name = "test-consumer" }, { name = "quota", config = config } },
                 { models = MODELS })
end

-- A chat request of 100 prompt tokens (400 bytes at ~4 bytes a token).
local PROMPT = ("x"):rep(400)

local function chat(c, headers, body)
  body = body or {}
  body.model = body.model or "fast"
  body.messages = body.messages or { { role = "user", content = PROMPT } }
  return t.request(c, { headers = headers, json = body })
end

local function team(name) return { ["x-test-team"] = name } end

-- Tests that count requests in a minute window must not straddle two.
local function settle_in_window(period)
  local left = period - os.time() % period
  if left < 3 then socket.sleep(left + 0.05) end
end

local function answer(c, res, status, usage)
  t.upstream_response(c, res.ctx, status or 200, { ["content-type"] = "application/json" })
  res.ctx.usage = usage -- what the front door sets from the provider's answer
  return t.log(c, res.ctx, { status = status or 200 })
end

local function outcomes(res)
  local out = {}
  for _, d in ipairs(t.decisions(res.ctx)) do
    if d.plugin == "quota" then out[#out + 1] = d.outcome end
  end
  return out
end

-- The UTC epoch second the next calendar month starts, by os.time.
local function next_month_utc(now)
  local u = os.date("!*t", now)
  local y, m = u.year, u.month + 1
  if m > 12 then y, m = y + 1, 1 end
  local as_local = os.time({ year = y, month = m, day = 1, hour = 0, min = 0, sec = 0, isdst = false })
  local offset = os.time(os.date("*t", now)) - os.time(os.date("!*t", now))
  return as_local + offset
end

describe("quota plugin", function()
  describe("requests per window", function()
    it("serves exactly N requests and refuses the next with 429, Retry-After and x-ratelimit headers", function()
      local c = chain({ limits = { { by = "team", requests = 3 } } })
      local who = team(fresh("payments"))
      settle_in_window(60)
      for i = 1, 3 do
        local res = chat(c, who)
        assert.equals("ok", res.action, "request " .. i)
        assert.equals("3", res.response_headers["x-ratelimit-limit-requests"])
        assert.equals(tostring(3 - i), res.response_headers["x-ratelimit-remaining-requests"])
      end
      local res = chat(c, who)
      assert.equals("deny", res.action)
      assert.equals(429, res.status)
      assert.equals("requests_limit_exceeded", res.code)
      assert.matches("3 requests per minute for each team", res.message, 1, true)
      local h = res.response_headers
      local retry = tonumber(h["retry-after"])
      local left = 60 - os.time() % 60
      assert.is_true(retry >= left - 1 and retry <= left + 1, "retry-after " .. retry .. ", window left " .. left)
      assert.equals("3", h["x-ratelimit-limit-requests"])
      assert.equals("0", h["x-ratelimit-remaining-requests"])
      assert.matches("^%d[%dhm]*s$", h["x-ratelimit-reset-requests"])
      assert.same({ "deny" }, outcomes(res))
    end)

    it("counts each team on its own, without the teams being declared", function()
      local c = chain({ limits = { { by = "team", requests = 1 } } })
      local a, b = team(fresh("a")), team(fresh("b"))
      settle_in_window(60)
      assert.equals("ok", chat(c, a).action)
      assert.equals("ok", chat(c, b).action)
      assert.equals("deny", chat(c, a).action)
      assert.equals("deny", chat(c, b).action)
    end)

    it("keys a limit by a JWT claim under consumer.claims", function()
      local c = chain({ limits = { { by = "claims.sub", requests = 1 } } })
      local sub = fresh("user")
      settle_in_window(60)
      -- the same subject from two teams is one caller
      assert.equals("ok", chat(c, { ["x-test-sub"] = sub, ["x-test-team"] = "t1" }).action)
      local res = chat(c, { ["x-test-sub"] = sub, ["x-test-team"] = "t2" })
      assert.equals("deny", res.action)
      assert.matches("for each sub", res.message, 1, true)
      assert.equals("ok", chat(c, { ["x-test-sub"] = fresh("user") }).action)
    end)

    it("leaves requests without the identity field uncounted", function()
      local c = chain({ limits = { { by = "team", requests = 1 } } })
      for _ = 1, 3 do
        local res = chat(c, { ["x-test-app"] = fresh("app") })
        assert.equals("ok", res.action)
        assert.is_nil(res.response_headers["x-ratelimit-limit-requests"])
      end
      assert.equals("ok", chat(c, nil).action)
    end)

    it("gives a named identity its own limit through overrides", function()
      local big = fresh("big")
      local c = chain({ limits = { { by = "team", requests = 1, overrides = { [big] = 2 } } } })
      settle_in_window(60)
      assert.equals("ok", chat(c, team(big)).action)
      assert.equals("ok", chat(c, team(big)).action)
      assert.equals("deny", chat(c, team(big)).action)
    end)

    it("counts from zero again in the next window of a 2s period", function()
      local c = chain({ limits = { { by = "team", requests = 1, period = "2s" } } })
      local who = team(fresh("short"))
      settle_in_window(2)
      assert.equals("ok", chat(c, who).action)
      local res = chat(c, who)
      assert.equals("deny", res.action)
      local retry = tonumber(res.response_headers["retry-after"])
      assert.is_true(retry >= 1 and retry <= 2)
      socket.sleep(2 - socket.gettime() % 2 + 0.05)
      assert.equals("ok", chat(c, who).action)
    end)
  end)

  describe("tokens", function()
    it("reserves the prompt estimate plus max_tokens and serves exactly up to the limit", function()
      local c = chain({ limits = { { by = "team", tokens = 300 } } })
      local who = team(fresh("tok"))
      settle_in_window(60)
      local first = chat(c, who, { max_tokens = 50 })
      assert.equals("ok", first.action)
      assert.equals("150", first.response_headers["x-ratelimit-remaining-tokens"])
      assert.equals("ok", chat(c, who, { max_tokens = 50 }).action) -- lands on 300 exactly
      local res = chat(c, who, { max_tokens = 50 })
      assert.equals("deny", res.action)
      assert.equals("tokens_limit_exceeded", res.code)
      assert.equals("300", res.response_headers["x-ratelimit-limit-tokens"])
      assert.equals("0", res.response_headers["x-ratelimit-remaining-tokens"])
      assert.matches("^%d[%dhm]*s$", res.response_headers["x-ratelimit-reset-tokens"])
    end)

    it("reserves default_completion_tokens when the request sets no max_tokens", function()
      local c = chain({ default_completion_tokens = 20, limits = { { by = "team", tokens = 240 } } })
      local who = team(fresh("dflt"))
      settle_in_window(60)
      assert.equals("120", chat(c, who).response_headers["x-ratelimit-remaining-tokens"])
      assert.equals("0", chat(c, who).response_headers["x-ratelimit-remaining-tokens"])
      assert.equals("deny", chat(c, who).action)
    end)

    it("settles at log with the reported usage, giving back what was not used", function()
      local c = chain({ limits = { { by = "team", tokens = 300 } } })
      local who = team(fresh("settle"))
      settle_in_window(60)
      local res = chat(c, who, { max_tokens = 200 })
      assert.equals("0", res.response_headers["x-ratelimit-remaining-tokens"])
      local record = answer(c, res, 200, { prompt_tokens = 100, completion_tokens = 10, total_tokens = 110,
                                           source = "reported" })
      assert.is_table(record)
      local nxt = chat(c, who, { max_tokens = 50 })
      assert.equals("ok", nxt.action)
      assert.equals("40", nxt.response_headers["x-ratelimit-remaining-tokens"])
    end)

    it("charges more than reserved when the provider reports more", function()
      local c = chain({ limits = { { by = "team", tokens = 300 } } })
      local who = team(fresh("more"))
      settle_in_window(60)
      local res = chat(c, who, { max_tokens = 50 })
      answer(c, res, 200, { prompt_tokens = 120, completion_tokens = 100, total_tokens = 220 })
      local nxt = chat(c, who, { max_tokens = 50 })
      assert.equals("deny", nxt.action)
      assert.equals("80", nxt.response_headers["x-ratelimit-remaining-tokens"])
    end)

    it("gives back the whole reservation of a request that got no answer", function()
      local c = chain({ limits = { { by = "team", tokens = 150 } } })
      local who = team(fresh("noanswer"))
      settle_in_window(60)
      local res = chat(c, who, { max_tokens = 50 })
      t.log(c, res.ctx, { status = 502 })
      assert.equals("0", chat(c, who, { max_tokens = 50 }).response_headers["x-ratelimit-remaining-tokens"])
    end)

    it("takes back every count of a refused request", function()
      local c = chain({ limits = { { by = "team", requests = 10 }, { by = "team", tokens = 150 } } })
      local who = team(fresh("back"))
      settle_in_window(60)
      assert.equals("ok", chat(c, who, { max_tokens = 50 }).action)
      local res = chat(c, who, { max_tokens = 50 })
      assert.equals("deny", res.action)
      assert.equals("9", res.response_headers["x-ratelimit-remaining-requests"])
      assert.equals("0", res.response_headers["x-ratelimit-remaining-tokens"])
      local again = chat(c, who, { max_tokens = 0 }) -- 100 tokens do not fit either
      assert.equals("deny", again.action)
      assert.equals("9", again.response_headers["x-ratelimit-remaining-requests"])
    end)

    it("says so when one request is larger than the whole limit", function()
      local c = chain({ limits = { { by = "team", tokens = 100 } } })
      local res = chat(c, team(fresh("huge")), { max_tokens = 1 })
      assert.equals("deny", res.action)
      assert.matches("this request alone (about 101 tokens) is larger than the limit of 100 tokens per minute",
                     res.message, 1, true)
    end)

    it("applies a limit with models only to those public models", function()
      local c = chain({ limits = { { by = "team", tokens = 150, models = { "chat-big" } } } })
      local who = team(fresh("models"))
      settle_in_window(60)
      assert.equals("ok", chat(c, who, { model = "chat-big", max_tokens = 50 }).action)
      assert.equals("deny", chat(c, who, { model = "chat-big", max_tokens = 50 }).action)
      assert.equals("ok", chat(c, who, { model = "fast", max_tokens = 50 }).action)
    end)
  end)

  describe("cost budgets", function()
    local prices = { ["chat-fast"] = { input = 1.0, output = 2.0 } }

    it("serves exactly up to a monthly budget priced by public model name, then refuses until the month ends", function()
      -- 100 prompt tokens × $1/1M + 50 × $2/1M = $0.0002 a request
      local c = chain({ prices = prices, limits = { { by = "team", cost = 0.0004 } } })
      local who = team(fresh("budget"))
      assert.equals("ok", chat(c, who, { model = "fast", max_tokens = 50 }).action)
      assert.equals("ok", chat(c, who, { model = "chat-fast", max_tokens = 50 }).action)
      local res = chat(c, who, { max_tokens = 50 })
      assert.equals("deny", res.action)
      assert.equals(429, res.status)
      assert.equals("cost_budget_exceeded", res.code)
      assert.matches("a budget of $0.00 per month for each team", res.message, 1, true)
      local now = os.time()
      local left = next_month_utc(now) - now
      local retry = tonumber(res.response_headers["retry-after"])
      assert.is_true(math.abs(retry - left) <= 2, "retry-after " .. retry .. ", month left " .. left)
    end)

    it("counts fractional prices in whole micro-dollars without drifting past the budget", function()
      -- 1000 prompt tokens × $0.15/1M = 150 micro-dollars, three fit in 450
      local c = chain({ prices = { ["chat-fast"] = { input = 0.15, output = 0.6 } },
                        limits = { { by = "team", cost = 0.00045 } } })
      local who = team(fresh("frac"))
      local body = function()
        return { max_tokens = 0, messages = { { role = "user", content = ("y"):rep(4000) } } }
      end
      for i = 1, 3 do assert.equals("ok", chat(c, who, body()).action, "request " .. i) end
      assert.equals("deny", chat(c, who, body()).action)
    end)

    it("prices models without their own entry with the '*' price", function()
      local c = chain({ prices = { ["*"] = { input = 1, output = 1 } }, limits = { { by = "team", cost = 0.00015 } } })
      local who = team(fresh("star"))
      assert.equals("ok", chat(c, who, { model = "chat-big", max_tokens = 50 }).action)
      assert.equals("deny", chat(c, who, { model = "chat-big", max_tokens = 50 }).action)
    end)

    it("flags a model without a price and does not count it", function()
      local c = chain({ prices = prices, limits = { { by = "team", cost = 0.0001 } } })
      local who = team(fresh("unpriced"))
      for _ = 1, 3 do
        local res = chat(c, who, { model = "chat-big", max_tokens = 50 })
        assert.equals("ok", res.action)
        assert.same({ "flag" }, outcomes(res))
      end
    end)

    it("settles the budget with the reported usage", function()
      local c = chain({ prices = prices, limits = { { by = "team", cost = 0.0003 } } })
      local who = team(fresh("costsettle"))
      local res = chat(c, who, { max_tokens = 50 }) -- $0.0002 reserved
      local _, audit = answer(c, res, 200, { prompt_tokens = 100, completion_tokens = 0 }) -- $0.0001 used
      assert.equals(0.0001, audit.annotations.quota.cost_usd)
      assert.equals(0.0001, audit.cost_usd) -- promoted to the top of the record
      assert.equals("ok", chat(c, who, { max_tokens = 50 }).action)  -- 0.0001 + 0.0002 = budget
      assert.equals("deny", chat(c, who, { max_tokens = 0 }).action)
    end)
  end)

  describe("soft limits", function()
    it("serves past a soft limit with a warn decision and an x-sluice-quota-warning header", function()
      local c = chain({ limits = { { by = "team", requests = 1, soft = true } } })
      local who = team(fresh("soft"))
      settle_in_window(60)
      local first = chat(c, who)
      assert.equals("ok", first.action)
      assert.is_nil(first.response_headers["x-sluice-quota-warning"])
      assert.same({}, outcomes(first))
      local res = chat(c, who)
      assert.equals("ok", res.action)
      assert.same({ "warn" }, outcomes(res))
      assert.equals("over the soft limit of 1 request per minute for each team",
                    res.response_headers["x-sluice-quota-warning"])
      assert.is_nil(res.response_headers["x-ratelimit-limit-requests"])
    end)
  end)

  describe("streams", function()
    local SSE = { ["content-type"] = "text/event-stream" }
    -- 8 bytes of content: 2 tokens at ~4 bytes a token
    local CHUNK = "data: " .. json.encode({ object = "chat.completion.chunk",
      choices = { { index = 0, delta = { content = "abcdefgh" } } } }) .. "\n\n"

    local function start(c, who, conf_stream)
      local res = chat(c, who, { stream = conf_stream ~= false })
      assert.equals("ok", res.action)
      t.upstream_response(c, res.ctx, 200, SSE)
      return res
    end

    it("charges a stream as it goes and cuts it at a hard token limit with a final error event", function()
      -- 100 prompt + 10 reserved; each chunk is 2 more tokens
      local c = chain({ default_completion_tokens = 10, limits = { { by = "team", tokens = 130 } } })
      local who = team(fresh("cut"))
      settle_in_window(60)
      local res = start(c, who)
      for i = 1, 15 do -- 30 completion tokens: 130, exactly the limit
        assert.equals(CHUNK, t.body_filter(c, res.ctx, CHUNK, false), "chunk " .. i)
      end
      local cut = t.body_filter(c, res.ctx, CHUNK, false)
      local data = {}
      for d in cut:gmatch("data: ([^\n]*)\n\n") do data[#data + 1] = d end
      assert.equals(2, #data)
      local e = json.decode(data[1]).error
      assert.equals("rate_limit_error", e.type)
      assert.equals("token_budget_exceeded", e.code)
      assert.matches("token budget of 130 tokens per minute for each team", e.message, 1, true)
      assert.equals("[DONE]", data[2])
      assert.equals("", t.body_filter(c, res.ctx, CHUNK, false))
      assert.equals("", t.body_filter(c, res.ctx, "data: [DONE]\n\n", false))
      assert.same({ "modify" }, outcomes(res))
    end)

    it("lets a stream run past the limit when cut_streams is off, and still charges it", function()
      local c = chain({ cut_streams = false, default_completion_tokens = 10,
                        limits = { { by = "team", tokens = 130 } } })
      local who = team(fresh("nocut"))
      settle_in_window(60)
      local res = start(c, who)
      for _ = 1, 20 do assert.equals(CHUNK, t.body_filter(c, res.ctx, CHUNK, false)) end
      -- 140 charged: nothing left for a next request
      local nxt = chat(c, who)
      assert.equals("deny", nxt.action)
      assert.equals("0", nxt.response_headers["x-ratelimit-remaining-tokens"])
    end)

    it("settles a stream the client aborted with what was streamed", function()
      local c = chain({ default_completion_tokens = 10, limits = { { by = "team", tokens = 1000 } } })
      local who = team(fresh("abort"))
      settle_in_window(60)
      local res = start(c, who)
      for _ = 1, 10 do t.body_filter(c, res.ctx, CHUNK, false) end -- 20 tokens
      local _, audit = t.log(c, res.ctx, { status = 499 })
      assert.same({ prompt = 100, completion = 20, source = "streamed" },
                  audit.annotations.quota.quota_tokens)
      -- 1000 − 120 charged − 110 reserved by the next one
      assert.equals("770", chat(c, who).response_headers["x-ratelimit-remaining-tokens"])
    end)

    it("counts several events in one piece and tool-call arguments", function()
      local c = chain({ default_completion_tokens = 0, limits = { { by = "team", tokens = 104 } } })
      local who = team(fresh("multi"))
      settle_in_window(60)
      local res = start(c, who)
      local tool = "data: " .. json.encode({ choices = { { index = 0, delta = { tool_calls = {
        { index = 0, ["function"] = { arguments = "{\"city\":" } } } } } } }) .. "\n\n"
      -- 8 + 8 bytes: 4 tokens, 104 in all — on the limit
      assert.equals(CHUNK .. tool, t.body_filter(c, res.ctx, CHUNK .. tool, false))
      local cut = t.body_filter(c, res.ctx, CHUNK, false)
      assert.matches("token_budget_exceeded", cut, 1, true)
    end)

    it("leaves a stream alone under a soft limit", function()
      local c = chain({ default_completion_tokens = 0, limits = { { by = "team", tokens = 100, soft = true } } })
      local res = start(c, team(fresh("softstream")))
      for _ = 1, 5 do assert.equals(CHUNK, t.body_filter(c, res.ctx, CHUNK, false)) end
    end)
  end)

  describe("configuration", function()
    local function refused(config)
      local c, err = t.try_chain({ { name = "quota", config = config } })
      assert.is_nil(c)
      return err
    end

    it("refuses a limit that counts two things", function()
      assert.matches("limits%[1%]: set one of requests, tokens or cost, not several",
        refused({ limits = { { by = "team", requests = 1, tokens = 1 } } }))
    end)

    it("refuses a limit that counts nothing", function()
      assert.matches("limits%[1%]: set one of requests, tokens or cost",
        refused({ limits = { { by = "team" } } }))
    end)

    it("refuses a cost limit without prices", function()
      assert.matches("a cost limit needs prices", refused({ limits = { { by = "team", cost = 5 } } }))
    end)

    it("refuses a period that is not a window", function()
      assert.matches("config%.limits%[1%]%.period: expected minute, hour, day, month",
        refused({ limits = { { by = "team", requests = 1, period = "fortnight" } } }))
      assert.matches("period: expected",
        refused({ limits = { { by = "team", requests = 1, period = "1500ms" } } }))
    end)
  end)
end)

describe("quota plugin with a policy exception", function()
  local json = require "sluice.json"
  local function iso(e) return os.date("!%Y-%m-%dT%H:%M:%SZ", e) end
  it("raises a named limit for the consumer the exception names, recording its id", function()
    t.plugin_dirs = { "plugins", "spec/fixtures/plugins" }
    local c = t.chain({ { name = "test-consumer" },
      { name = "quota", config = { limits = { { name = "team-rpm", by = "team", requests = 1,
                                                 period = "60s" } } } } },
      { exceptions = { { id = "EXC-Q", owner = "fin-ops", reason = "launch week", created = iso(os.time() - 10),
                         expires = iso(os.time() + 3600), teams = { "launch-" .. os.time() },
                         grants = { quota = { ["team-rpm"] = 3 } } } } })
    local team = "launch-" .. os.time()
    local other = "quiet-" .. os.time()
    local function call(tm)
      return t.request(c, { headers = { ["x-test-consumer"] = json.encode({ id = tm, team = tm }) },
                            json = { model = "m", messages = {} } })
    end
    for _ = 1, 3 do assert.equals("ok", call(team).action) end
    assert.equals(429, call(team).status)
    assert.equals("ok", call(other).action)
    assert.equals(429, call(other).status)
    local res = call(team)
    local _, audit = t.log(c, res.ctx)
    assert.same({ "EXC-Q" }, audit.exceptions)
  end)
end)

describe("quota plugin settling a request no backend answered", function()
  it("gives back the whole reservation when the last attempt failed before any answer", function()
    local json = require "sluice.json"
    t.plugin_dirs = { "plugins", "spec/fixtures/plugins" }
    local team = "down-" .. os.time()
    local c = t.chain({ { name = "test-consumer" },
      { name = "quota", config = { default_completion_tokens = 100,
                                   limits = { { by = "team", tokens = 150, period = "60s" } } } } },
      { models = { m = { targets = { { backend = "mock" } } } } })
    local function call()
      return t.request(c, { headers = { ["x-test-consumer"] = json.encode({ id = team, team = team }) },
                            json = { model = "m", messages = { { role = "user", content = "hi" } } } })
    end
    local res = call()
    assert.equals("ok", res.action)
    -- a fallback plugin reported the connect error as status 0
    t.upstream_response(c, res.ctx, 0, {}, "mock", 1, false)
    t.log(c, res.ctx)
    -- nothing was charged: the next request's reservation fits again
    assert.equals("ok", call().action)
  end)
end)

describe("quota plugin settling a prompt that was sent but never answered", function()
  it("charges the prompt when the client left while an attempt was out", function()
    local json = require "sluice.json"
    t.plugin_dirs = { "plugins", "spec/fixtures/plugins" }
    local team = "gone-" .. os.time()
    local c = t.chain({ { name = "test-consumer" },
      { name = "quota", config = { default_completion_tokens = 100,
                                   limits = { { by = "team", tokens = 150, period = "60s" } } } } },
      { models = { m = { targets = { { backend = "mock" } } } } })
    local prompt = string.rep("word ", 40) -- about 50 tokens
    local function call()
      return t.request(c, { headers = { ["x-test-consumer"] = json.encode({ id = team, team = team }) },
                            json = { model = "m", messages = { { role = "user", content = prompt } } } })
    end
    local res = call()
    assert.equals("ok", res.action)
    local _, audit = t.log(c, res.ctx, { attempts = { { backend = "mock", status = 0, outcome = "aborted" } } })
    assert.equals("prompt sent, no answer", audit.annotations.quota.quota_tokens.source)
    assert.is_true(audit.annotations.quota.quota_tokens.prompt > 0)
    assert.equals(0, audit.annotations.quota.quota_tokens.completion)
  end)
end)
