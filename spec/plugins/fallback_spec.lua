-- fallback_spec.lua — the fallback plugin: which targets are tried in what
-- order, when the request moves on, Retry-After cool-downs, the circuit
-- breaker, drains and the context-length fallback. Run in the real runtime
-- (sluice.test); the gateway side is spec/e2e/fallback_spec.lua.
local t = require "sluice.test"
local runtime = require "sluice.runtime"
local json = require "sluice.json"

-- sluice.shared is process-wide: each case gets its own backend names.
local seq = 0
local function names(n)
  seq = seq + 1
  local out = {}
  for i = 1, n do out[i] = ("s%d-%s"):format(seq, string.char(96 + i)) end
  return out
end

local function setup(conf, n, extra_models)
  local bes = names(n or 2)
  local backends, targets = {}, {}
  for i, b in ipairs(bes) do
    backends[b] = { provider = "openai" }
    targets[i] = { backend = b, model = "small-" .. i }
  end
  local models = { small = { targets = targets } }
  for k, v in pairs(extra_models or {}) do models[k] = v end
  local c = type(conf) == "function" and conf(bes) or conf or {}
  local chain = t.chain({ { name = "fallback", config = c } }, { models = models, backends = backends })
  return chain, bes
end

local function request(chain)
  return t.request(chain, { headers = { ["content-type"] = "application/json" },
                            json = { model = "small", messages = { { role = "user", content = "hi" } } } })
end

-- An attempt's outcome as the gateway reports it: a head (status, headers,
-- body of an error answer) or a failure (status 0, err).
local function attempt(chain, res, n, backend, status, opts)
  opts = opts or {}
  local flat = {}
  for k, v in pairs(opts.headers or {}) do flat[#flat + 1] = k; flat[#flat + 1] = v end
  local more = opts.more
  if more == nil then more = true end
  return runtime.upstream_response(chain, res.ctx, status, flat, backend, n, more, opts.err,
                                   opts.ms or 5, opts.body)
end

local function decisions(res)
  local out = {}
  for _, d in ipairs(t.decisions(res.ctx)) do out[#out + 1] = d.outcome .. ": " .. (d.reason or "") end
  return out
end

-- Whether a decision reads `text` (plain text, not a pattern).
local function has_decision(res, text)
  for _, d in ipairs(decisions(res)) do
    if d:find(text, 1, true) then return true end
  end
  return false
end

describe("fallback plugin", function()
  describe("order", function()
    it("tries the catalog's targets in order when no tiers are configured", function()
      local chain, b = setup({}, 3)
      for _ = 1, 10 do assert.same(b, request(chain).targets) end
    end)

    it("puts lower tiers first and shares a tier by weight", function()
      local chain, b = setup(function(bes)
        return { tiers = { [bes[1]] = 2, [bes[2]] = 1, [bes[3]] = 1 },
                 weights = { [bes[2]] = 3, [bes[3]] = 1 } }
      end, 3)
      local first = { [b[2]] = 0, [b[3]] = 0 }
      for _ = 1, 400 do
        local tg = request(chain).targets
        assert.equals(b[1], tg[3]) -- tier 2 always last
        first[tg[1]] = first[tg[1]] + 1
      end
      local share = first[b[2]] / 400
      assert.is_true(share > 0.62 and share < 0.88, "weight 3 of 4 led " .. share .. " of the time")
    end)

    it("caps the list at max_attempts", function()
      local chain, b = setup({ max_attempts = 2 }, 3)
      assert.same({ b[1], b[2] }, request(chain).targets)
    end)
  end)

  describe("moving on", function()
    it("moves on after a 429 and records the fall-back as a decision", function()
      local chain, b = setup({})
      local res = request(chain)
      assert.equals("next", attempt(chain, res, 1, b[1], 429))
      assert.equals("accept", attempt(chain, res, 2, b[2], 200, { more = false }))
      assert.is_true(has_decision(res, "modify: fell back from '" .. b[1] .. "' to '" .. b[2] .. "'"))
      assert.is_true(has_decision(res, "' to '" .. b[2] .. "' (small-2): 429"))
    end)

    it("moves on after 5xx answers and after connect errors, timeouts and resets", function()
      for _, case in ipairs({ { 500 }, { 503 }, { 0, "connect_error" }, { 0, "timeout" }, { 0, "reset" } }) do
        local chain, b = setup({})
        local res = request(chain)
        assert.equals("next", attempt(chain, res, 1, b[1], case[1], { err = case[2] }),
                      "status " .. case[1] .. " " .. tostring(case[2]))
      end
    end)

    it("accepts answers outside retry_on, and errors outside retry_on_errors", function()
      local chain, b = setup({ retry_on = { 503 }, retry_on_errors = { "connect_error" } })
      local res = request(chain)
      assert.equals("accept", attempt(chain, res, 1, b[1], 200))
      assert.equals("accept", attempt(chain, request(chain), 1, b[1], 429))
      assert.equals("accept", attempt(chain, request(chain), 1, b[1], 0, { err = "timeout" }))
      assert.equals("next", attempt(chain, request(chain), 1, b[1], 503))
    end)

    it("accepts the last target's failure: nothing is left to try", function()
      local chain, b = setup({})
      local res = request(chain)
      assert.equals("accept", attempt(chain, res, 2, b[2], 503, { more = false }))
    end)

    it("stops at max_attempts even when targets remain", function()
      local chain, b = setup({ max_attempts = 2 }, 3)
      local res = request(chain)
      assert.equals("next", attempt(chain, res, 1, b[1], 503))
      assert.equals("accept", attempt(chain, res, 2, b[2], 503))
    end)

    it("gives the gateway its attempt limits in milliseconds", function()
      local chain = setup({ attempt_timeout = "300ms", total_timeout = "2s" })
      local conf = chain.upstream_response[1].conf
      assert.equals(300, conf.attempt_timeout)
      assert.equals(2000, conf.total_timeout)
    end)
  end)

  describe("Retry-After", function()
    it("cools a backend down for what it asked, so other requests skip it", function()
      local chain, b = setup({})
      local res = request(chain)
      assert.equals("next", attempt(chain, res, 1, b[1], 429, { headers = { ["retry-after"] = "30" } }))
      local later = request(chain)
      assert.same({ b[2] }, later.targets)
      assert.is_true(has_decision(later, "skipped '" .. b[1] .. "': cooling down"))
    end)

    it("caps the cool-down at max_cool_down", function()
      local chain, b = setup({ max_cool_down = "1s" })
      local res = request(chain)
      attempt(chain, res, 1, b[1], 503, { headers = { ["retry-after"] = "3600" } })
      local _, audit = t.log(chain, res.ctx)
      assert.equals(1, audit.annotations.fallback.cooled_down.seconds)
    end)

    it("refuses with 503 and a Retry-After when every target is cooling down", function()
      local chain, b = setup({})
      local res = request(chain)
      attempt(chain, res, 1, b[1], 429, { headers = { ["retry-after"] = "20" } })
      attempt(chain, res, 2, b[2], 429, { headers = { ["retry-after"] = "40" }, more = false })
      local denied = request(chain)
      assert.equals("deny", denied.action)
      assert.equals(503, denied.status)
      assert.equals("no_backend_available", denied.code)
      local ra = tonumber(denied.response_headers["retry-after"])
      assert.is_true(ra >= 19 and ra <= 20, "retry-after " .. tostring(ra))
    end)
  end)

  describe("circuit breaker", function()
    it("opens after consecutive failures and skips the backend while open", function()
      local chain, b = setup({ breaker = { consecutive_failures = 3, cool_down = "10s" } })
      for i = 1, 3 do
        local res = request(chain)
        assert.same(b, res.targets, "request " .. i)
        attempt(chain, res, 1, b[1], 502)
        if i == 3 then assert.is_true(has_decision(res, "flag: circuit breaker for '" .. b[1] .. "' opened")) end
      end
      local res = request(chain)
      assert.same({ b[2] }, res.targets)
      assert.is_true(has_decision(res, "skipped '" .. b[1] .. "': circuit breaker open"))
    end)

    it("does not open when failures are interrupted by a success", function()
      local chain, b = setup({ breaker = { consecutive_failures = 2 } })
      attempt(chain, request(chain), 1, b[1], 0, { err = "reset" })
      attempt(chain, request(chain), 1, b[1], 200)
      attempt(chain, request(chain), 1, b[1], 0, { err = "reset" })
      assert.same(b, request(chain).targets)
    end)

    it("opens on a failure ratio over the window once min_requests is reached", function()
      local chain, b = setup({ breaker = { consecutive_failures = 100, failure_ratio = 0.5, min_requests = 4 } })
      for _, s in ipairs({ 200, 500, 200 }) do attempt(chain, request(chain), 1, b[1], s) end
      assert.same(b, request(chain).targets)
      attempt(chain, request(chain), 1, b[1], 500) -- 2 of 4
      assert.same({ b[2] }, request(chain).targets)
    end)

    it("lets one probe through after the cool-down; its success closes the breaker", function()
      local chain, b = setup({ breaker = { consecutive_failures = 1, cool_down = "200ms" } })
      attempt(chain, request(chain), 1, b[1], 503)
      assert.same({ b[2] }, request(chain).targets)
      require("socket").sleep(0.25)
      local probe = request(chain)
      assert.same(b, probe.targets)
      assert.same({ b[2] }, request(chain).targets, "one probe at a time")
      attempt(chain, probe, 1, b[1], 200)
      assert.is_true(has_decision(probe, "allow: circuit breaker for '" .. b[1] .. "' closed"))
      assert.same(b, request(chain).targets)
    end)

    it("opens again when the probe fails", function()
      local chain, b = setup({ breaker = { consecutive_failures = 1, cool_down = "200ms" } })
      attempt(chain, request(chain), 1, b[1], 503)
      require("socket").sleep(0.25)
      local probe = request(chain)
      attempt(chain, probe, 1, b[1], 0, { err = "timeout" })
      assert.is_true(has_decision(probe, "opened for 0.2s: the half-open probe failed"))
      assert.same({ b[2] }, request(chain).targets)
    end)

    it("is decided only by its probe, not by a request sent before it opened", function()
      local chain, b = setup({ breaker = { consecutive_failures = 1, cool_down = "200ms" } })
      local early = request(chain) -- on its way to b[1] before the breaker opens
      attempt(chain, request(chain), 1, b[1], 503)
      require("socket").sleep(0.25)
      local probe = request(chain) -- holds the half-open probe
      attempt(chain, early, 1, b[1], 200) -- the early one answers late: no verdict
      assert.is_false(has_decision(early, "closed"))
      assert.same({ b[2] }, request(chain).targets, "still half-open, its probe in flight")
      attempt(chain, probe, 1, b[1], 200)
      assert.is_true(has_decision(probe, "allow: circuit breaker for '" .. b[1] .. "' closed"))
    end)

    it("gives back a probe the request never used", function()
      local chain, b = setup({ breaker = { consecutive_failures = 1, cool_down = "200ms" } })
      attempt(chain, request(chain), 1, b[1], 503)
      require("socket").sleep(0.25)
      local probe = request(chain)
      t.log(chain, probe.ctx) -- ended before reaching the backend
      assert.same(b, request(chain).targets)
    end)

    it("counts nothing when disabled", function()
      local chain, b = setup({ breaker = { enabled = false, consecutive_failures = 1 } })
      attempt(chain, request(chain), 1, b[1], 503)
      assert.same(b, request(chain).targets)
    end)
  end)

  describe("drain", function()
    it("takes a drained backend out of every request", function()
      local chain, b = setup(function(bes) return { drain = { bes[1] } } end)
      local res = request(chain)
      assert.same({ b[2] }, res.targets)
      assert.is_true(has_decision(res, "skipped '" .. b[1] .. "': drained by policy"))
    end)

    it("refuses with 503 when every target is drained", function()
      local chain = setup(function(bes) return { drain = bes } end)
      local res = request(chain)
      assert.equals("deny", res.action)
      assert.equals(503, res.status)
      assert.matches("unavailable", res.message)
    end)
  end)

  describe("context length", function()
    local OPENAI = json.encode({ error = { message = "This model's maximum context length is 8192 tokens.",
                                           type = "invalid_request_error", code = "context_length_exceeded" } })
    local ANTHROPIC = json.encode({ type = "error", error = { type = "invalid_request_error",
                                    message = "prompt is too long: 250000 tokens > 200000 maximum" } })
    local GEMINI = json.encode({ error = { code = 400, status = "INVALID_ARGUMENT",
      message = "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)." } })

    local function ctx_setup()
      return setup(function(bes)
        return { context_fallback = { small = { backend = bes[3], model = "large-model" } } }
      end, 3)
    end

    it("moves on to the larger model named for this one", function()
      for _, body in ipairs({ OPENAI, ANTHROPIC, GEMINI }) do
        local chain, b = ctx_setup()
        local res = request(chain)
        local kind, rest = attempt(chain, res, 1, b[1], 400, { body = body })
        assert.equals("next", kind)
        assert.same({ b[3] }, rest)
        assert.equals("large-model", res.ctx.ai.targets[2].model)
        assert.is_true(has_decision(res, "to '" .. b[3] .. "' (large-model): context length exceeded"))
      end
    end)

    it("accepts another 400 as the client's mistake", function()
      local chain, b = ctx_setup()
      local body = json.encode({ error = { message = "messages is required", code = "invalid_request" } })
      assert.equals("accept", attempt(chain, request(chain), 1, b[1], 400, { body = body }))
    end)

    it("does nothing for a model without a larger one configured", function()
      local chain, b = setup({})
      assert.equals("accept", attempt(chain, request(chain), 1, b[1], 400, { body = OPENAI }))
    end)
  end)

  it("leaves the attempts in the audit record", function()
    local chain, b = setup({})
    local res = request(chain)
    attempt(chain, res, 1, b[1], 0, { err = "timeout", ms = 300 })
    attempt(chain, res, 2, b[2], 200, { ms = 12, more = false })
    local _, audit = t.log(chain, res.ctx)
    assert.same({ backend = b[1], status = 0, error = "timeout", latency_ms = 300, outcome = "next" },
                audit.attempts[1])
    assert.same({ backend = b[2], status = 200, latency_ms = 12, outcome = "served" }, audit.attempts[2])
  end)

  it("refuses unknown configuration keys", function()
    local _, err = t.try_chain({ { name = "fallback", config = { retries = 2 } } })
    assert.matches("config%.retries: unknown field", err)
  end)
end)
