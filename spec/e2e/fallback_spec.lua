-- End-to-end: the fallback plugin in the real gateway, against several mock
-- providers started with their own faults (`sluice mock --status 429`,
-- `--fault hang`, …). A degraded primary is invisible to the client: one
-- clean answer from the secondary; a hanging primary costs one attempt
-- timeout; a failing primary trips its breaker, which later recovers; a
-- stream that breaks mid-way is never retried and ends with an error event.
-- Every attempt is in the access log's audit record.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"
local json = require "sluice.json"

local function policy(primary, secondary, conf)
  local doc = {
    backends = {
      primary = { provider = "openai", url = primary.url or primary, region = "local" },
      secondary = { provider = "openai", url = secondary.url or secondary, region = "local" },
    },
    default_backend = "primary",
    models = { chat = { targets = { { backend = "primary", model = "mock-model" },
                                    { backend = "secondary", model = "mock-model" } } } },
    plugins = { { name = "fallback", config = conf or {} } },
  }
  return json.encode(doc) -- policies may be JSON; keeps lists of maps exact
end

local function gateway(primary, secondary, conf)
  local dir = proc.tmpdir()
  os.execute("mkdir -p " .. proc.quote(dir .. "/policies"))
  proc.write_file(dir .. "/policies/default.json", policy(primary, secondary, conf))
  local access = dir .. "/access.log"
  local gw = proc.gateway({ dir = dir,
    config = { log = { access = access, level = "info" },
               timeouts = { upstream_first_byte = "10s", upstream_idle = "5s" } } })
  gw.access = access
  return gw
end

local function chat(port, extra, headers)
  local body = { model = "chat", messages = { { role = "user", content = "hi" } } }
  for k, v in pairs(extra or {}) do body[k] = v end
  local h = { ["content-type"] = "application/json" }
  for k, v in pairs(headers or {}) do h[k] = v end
  return assert(http.request(port, { method = "POST", path = "/v1/chat/completions", headers = h,
                                     body = json.encode(body) }))
end

-- The audit record of the request with this id (the access log line).
local function record(gw, id)
  local deadline = proc.now() + 3
  while proc.now() < deadline do
    for line in (proc.read_file(gw.access) or ""):gmatch("[^\n]+") do
      local r = json.decode(line)
      if r and r.request_id == id then return r end
    end
    proc.sleep(0.02)
  end
  error("no access log line for " .. id)
end

local function calls(mock)
  local res = assert(http.request(mock.port, { path = "/mock/requests" }))
  return json.decode(res.body).total
end

describe("fallback end to end", function()
  teardown(function() proc.stop_all() end)

  it("serves a primary's 429 from the secondary: the client sees one clean answer", function()
    local primary = proc.mock({ status = 429 })
    local secondary = proc.mock()
    local gw = gateway(primary, secondary, {})
    local res = chat(gw.port, nil, { ["x-request-id"] = "fb-429", ["x-mock-retry-after"] = "7" })
    assert.equals(200, res.status, res.body)
    assert.equals("secondary", res.headers["x-sluice-backend"])
    local j = json.decode(res.body)
    assert.equals("Hello from the sluice mock provider.", j.choices[1].message.content)
    assert.is_nil(res.headers["retry-after"], "the primary's 429 leaked into the answer")
    assert.equals(1, calls(primary))
    local r = record(gw, "fb-429")
    assert.equals(2, #r.attempts)
    assert.same({ "primary", 429, "next" }, { r.attempts[1].backend, r.attempts[1].status, r.attempts[1].outcome })
    assert.same({ "secondary", 200, "served" }, { r.attempts[2].backend, r.attempts[2].status, r.attempts[2].outcome })
    assert.equals("number", type(r.attempts[1].latency_ms))
    local fell
    for _, d in ipairs(r.decisions) do
      if d.plugin == "fallback" and d.reason:find("fell back from 'primary' to 'secondary'", 1, true) then fell = d end
    end
    assert.is_truthy(fell, "no fall-back decision")
    -- Retry-After: 7 cooled the primary down; the next request skips it
    local again = chat(gw.port, nil, { ["x-request-id"] = "fb-429-2" })
    assert.equals(200, again.status)
    assert.equals(1, calls(primary), "a cooling backend was called")
    local r2 = record(gw, "fb-429-2")
    assert.equals(1, #r2.attempts)
    assert.equals("secondary", r2.attempts[1].backend)
    primary:stop(); secondary:stop(); gw:stop()
  end)

  it("times a hanging primary out per attempt and falls back within the deadline", function()
    local primary = proc.mock({ fault = "hang" })
    local secondary = proc.mock()
    local gw = gateway(primary, secondary, { attempt_timeout = "300ms", total_timeout = "3s" })
    local t0 = proc.now()
    local res = chat(gw.port, nil, { ["x-request-id"] = "fb-hang" })
    local took = proc.now() - t0
    assert.equals(200, res.status, res.body)
    assert.equals("secondary", res.headers["x-sluice-backend"])
    assert.is_true(took >= 0.29 and took < 2, "took " .. took .. "s")
    local r = record(gw, "fb-hang")
    assert.same({ "primary", 0, "timeout", "next" },
      { r.attempts[1].backend, r.attempts[1].status, r.attempts[1].error, r.attempts[1].outcome })
    assert.is_true(r.attempts[1].latency_ms >= 290 and r.attempts[1].latency_ms < 1500)
    assert.equals("served", r.attempts[2].outcome)
    primary:stop(); secondary:stop(); gw:stop()
  end)

  it("answers 504 when the overall deadline runs out before any target answers", function()
    local primary = proc.mock({ fault = "hang" })
    local secondary = proc.mock({ fault = "hang" })
    local gw = gateway(primary, secondary, { attempt_timeout = "400ms", total_timeout = "600ms" })
    local t0 = proc.now()
    local res = chat(gw.port, nil, { ["x-request-id"] = "fb-deadline" })
    local took = proc.now() - t0
    assert.equals(504, res.status, res.body)
    assert.equals("upstream_timeout", http.error_of(res).code)
    assert.is_true(took >= 0.55 and took < 1.5, "took " .. took .. "s")
    local r = record(gw, "fb-deadline")
    assert.equals(2, #r.attempts)
    assert.is_true(r.attempts[2].latency_ms < 350, "the second attempt outlived the deadline")
    primary:stop(); secondary:stop(); gw:stop()
  end)

  it("falls back on a connect error", function()
    local secondary = proc.mock()
    local gw = gateway("http://127.0.0.1:" .. proc.free_port(), secondary, {})
    local res = chat(gw.port, nil, { ["x-request-id"] = "fb-conn" })
    assert.equals(200, res.status, res.body)
    assert.equals("connect_error", record(gw, "fb-conn").attempts[1].error)
    secondary:stop(); gw:stop()
  end)

  it("opens the breaker on a failing primary and closes it after a good probe", function()
    local port = proc.free_port()
    local primary = proc.mock({ port = port, status = 503 })
    local secondary = proc.mock()
    local gw = gateway(primary, secondary,
      { breaker = { consecutive_failures = 2, cool_down = "1s" } })
    for i = 1, 2 do
      local res = chat(gw.port)
      assert.equals(200, res.status)
      assert.equals("secondary", res.headers["x-sluice-backend"], "request " .. i)
    end
    assert.equals(2, calls(primary))
    -- open: the primary is not called at all
    local res = chat(gw.port, nil, { ["x-request-id"] = "fb-open" })
    assert.equals("secondary", res.headers["x-sluice-backend"])
    assert.equals(2, calls(primary))
    local skipped
    for _, d in ipairs(record(gw, "fb-open").decisions) do
      if d.reason:find("skipped 'primary': circuit breaker open", 1, true) then skipped = true end
    end
    assert.is_true(skipped)
    -- the primary recovers; after the cool-down one probe closes the breaker
    primary:stop()
    primary = proc.mock({ port = port })
    proc.sleep(1.1)
    local probe = chat(gw.port, nil, { ["x-request-id"] = "fb-probe" })
    assert.equals("primary", probe.headers["x-sluice-backend"])
    local closed
    for _, d in ipairs(record(gw, "fb-probe").decisions) do
      if d.reason:find("circuit breaker for 'primary' closed", 1, true) then closed = true end
    end
    assert.is_true(closed)
    assert.equals("primary", chat(gw.port).headers["x-sluice-backend"])
    primary:stop(); secondary:stop(); gw:stop()
  end)

  it("does not retry a stream that fails mid-way and ends it with an error event", function()
    local primary = proc.mock({ fault = "reset-mid-stream" })
    local secondary = proc.mock()
    local gw = gateway(primary, secondary, {})
    local res = chat(gw.port, { stream = true }, { ["x-request-id"] = "fb-mid" })
    assert.equals(200, res.status)
    assert.equals("primary", res.headers["x-sluice-backend"])
    local events = {}
    for data in res.body:gmatch("data: ([^\n]*)\n\n") do events[#events + 1] = data end
    assert.is_true(#events >= 1)
    local last = json.decode(events[#events])
    assert.is_table(last and last.error, "the stream did not end with an error event: " .. res.body)
    assert.equals("upstream_stream_error", last.error.code)
    assert.matches("mid%-stream", last.error.message)
    assert.is_nil(res.body:find("[DONE]", 1, true))
    assert.equals(0, calls(secondary), "a broken stream was retried")
    local r = record(gw, "fb-mid")
    assert.equals(1, #r.attempts)
    assert.same({ "primary", 200, "failed", "reset" },
      { r.attempts[1].backend, r.attempts[1].status, r.attempts[1].outcome, r.attempts[1].error })
    assert.is_true(proc.alive(gw.proc))
    primary:stop(); secondary:stop(); gw:stop()
  end)

  it("drains a backend named in the policy", function()
    local primary = proc.mock()
    local secondary = proc.mock()
    local gw = gateway(primary, secondary, { drain = { "primary" } })
    local res = chat(gw.port)
    assert.equals(200, res.status)
    assert.equals("secondary", res.headers["x-sluice-backend"])
    assert.equals(0, calls(primary))
    primary:stop(); secondary:stop(); gw:stop()
  end)
end)
