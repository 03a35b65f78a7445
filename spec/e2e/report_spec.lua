-- End-to-end: `sluice report` answers the incident review's questions from
-- audit logs. First a scripted stretch of real traffic through a real
-- gateway (key-auth, catalog, data-boundary, request-limits, redact — the
-- default policy's plugins — plus quota and fallback) against shipped mock
-- providers, one of them failing, one backend unreachable; every report is
-- then read from the gateway's own access log and checked against the
-- numbers the script knows it caused. Then a synthetic day of records
-- (timestamps over 24 hours, a failure spike at 14:00) for the time
-- buckets, --from/--to, gzip, CSV, and garbled lines.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"
local json = require "sluice.json"

local KEYS = { alice = "sk-report-alice-1111", bob = "sk-report-bob-2222",
               carol = "sk-report-carol-3333" }

local hash_of = proc.hash_key

local function iso(epoch) return os.date("!%Y-%m-%dT%H:%M:%SZ", epoch) end

local function report(args)
  local st, out = proc.sluice(args, 30)
  return st, out
end

-- The one JSON object a --json report prints.
local function report_json(args)
  local full = { "report" }
  for _, a in ipairs(args) do full[#full + 1] = a end
  full[#full + 1] = "--json"
  local st, out = report(full)
  assert.equals(0, st, out)
  local doc = json.decode(out)
  assert.is_table(doc, out)
  return doc
end

local function find_rows(rows, want)
  local found = {}
  for _, r in ipairs(rows) do
    local ok = true
    for k, v in pairs(want) do
      if r[k] ~= v then ok = false end
    end
    if ok then found[#found + 1] = r end
  end
  return found
end

local function one_row(rows, want)
  local found = find_rows(rows, want)
  assert.equals(1, #found, "rows matching " .. json.encode(want) .. " in " .. json.encode(rows))
  return found[1]
end

-- 40 bytes of prompt and max_tokens 7: the quota reserves 17 tokens and
-- the mock reports 10 + 7 = 17.
local PROMPT = ("q"):rep(40)
local TOKENS = 17
local PRICE = { input = 1.0, output = 2.0 } -- $ per 1M tokens
local COST = (10 * PRICE.input + 7 * PRICE.output) / 1e6

local function policy(failing, healthy, dead_port)
  return ([[
backends:
  primary: { provider: openai, url: "%s", region: local, data_classes: [public, internal] }
  secondary: { provider: openai, url: "%s", region: local, data_classes: [public, internal] }
  broken: { provider: azure, url: "http://127.0.0.1:%d", region: local, data_classes: [public, internal] }
default_backend: secondary
models:
  chat: { targets: [ { backend: primary, model: mock-model }, { backend: secondary, model: mock-model } ] }
  old-chat: { targets: [ { backend: secondary, model: mock-model } ], deprecated: 2020-01-01, sunset: 2099-01-01, replacement: chat }
  retired: { targets: [ { backend: secondary, model: mock-model } ], deprecated: 2019-01-01, sunset: 2020-01-01, replacement: chat }
  direct: { targets: [ { backend: broken, model: mock-model } ] }
  special: { targets: [ { backend: secondary, model: mock-model } ] }
exceptions:
  - id: EXC-REPORT-7
    owner: jane.doe@example.com
    reason: carol's pilot of the special model
    created: %s
    expires: %s
    apps: [c1]
    grants: { models: [special] }
plugins:
  - name: key-auth
    config:
      consumers:
        alice: { app: a1, team: red, data_class: internal, keys: [ { hash: "%s" } ] }
        bob: { app: b1, team: blue, data_class: internal, keys: [ { hash: "%s" } ] }
        carol: { app: c1, team: blue, data_class: internal, models: [chat], keys: [ { hash: "%s" } ] }
  - name: catalog
  - name: data-boundary
  - name: request-limits
    config: { global: { max_messages: 200, max_tokens: 8192 } }
  - name: redact
    config: { mode: mask }
  - name: quota
    config:
      prices: { "*": { input: %g, output: %g } }
      limits:
        - { by: team, tokens: 60, period: day, overrides: { red: 100000 } }
  - name: fallback
    config: { breaker: { enabled: false } }
]]):format(failing.url, healthy.url, dead_port, iso(os.time() - 60), iso(os.time() + 30 * 86400),
           hash_of(KEYS.alice), hash_of(KEYS.bob),
           hash_of(KEYS.carol), PRICE.input, PRICE.output)
end

local function chat(port, who, model)
  local headers = { ["content-type"] = "application/json" }
  if who then headers.authorization = "Bearer " .. KEYS[who] end
  return assert(http.request(port, { method = "POST", path = "/v1/chat/completions",
    headers = headers,
    body = json.encode({ model = model, max_tokens = 7,
                         messages = { { role = "user", content = PROMPT } } }) }))
end

describe("sluice report over a real gateway's audit log", function()
  local dir, log, policy_dir

  setup(function()
    local failing = proc.mock({ status = 503 })
    local healthy = proc.mock()
    dir = proc.tmpdir()
    policy_dir = dir .. "/policies"
    os.execute("mkdir -p " .. proc.quote(policy_dir))
    proc.write_file(policy_dir .. "/default.yaml", policy(failing, healthy, proc.free_port()))
    log = dir .. "/access.log"
    local gw = proc.gateway({ dir = dir, config = { log = { access = log, level = "warn" } } })
    -- the script: every status below is part of what the reports must find
    local script = {
      { "alice", "chat", 200, 4 },     -- primary answers 503: each falls back
      { "alice", "old-chat", 200, 3 }, -- deprecated: served with a warning
      { "alice", "retired", 410, 2 },  -- past sunset: refused
      { "alice", "direct", 502, 1 },   -- the backend is down
      { "bob", "old-chat", 200, 2 },
      { "carol", "special", 200, 1 },  -- granted by EXC-REPORT-7; blue at 51 tokens
      { "carol", "special", 429, 2 },  -- blue's 60 tokens a day: refused
      { nil, "chat", 401, 1 },         -- no key
    }
    for _, step in ipairs(script) do
      for _ = 1, step[4] do
        local res = chat(gw.port, step[1], step[2])
        assert.equals(step[3], res.status, (step[1] or "anonymous") .. " " .. step[2] .. ": " .. res.body)
      end
    end
    gw:stop() -- drains and flushes the access log
    failing:stop(); healthy:stop()
  end)

  teardown(function() proc.stop_all() end)

  it("names who still calls deprecated and sunset models", function()
    local doc = report_json({ "deprecated", log })
    assert.equals(3, #doc.rows, json.encode(doc.rows))
    local a = one_row(doc.rows, { model = "old-chat", consumer = "alice" })
    assert.same({ "deprecated", "a1", "red", 3, 3, 0 }, { a.state, a.app, a.team, a.calls, a.served, a.refused })
    local b = one_row(doc.rows, { model = "old-chat", consumer = "bob" })
    assert.same({ "deprecated", 2, 2 }, { b.state, b.calls, b.served })
    local r = one_row(doc.rows, { model = "retired", consumer = "alice" })
    assert.same({ "sunset", 2, 0, 2 }, { r.state, r.calls, r.served, r.refused })
    assert.equals(0, doc.skipped)
    assert.equals(16, doc.records)
  end)

  it("counts fallbacks and errors by provider and backend", function()
    local doc = report_json({ "failures", "--bucket", "1d", log })
    local p = one_row(doc.rows, { backend = "primary" })
    assert.same({ 4, 4, 0 }, { p.attempts, p.fallbacks, p.errors })
    local b = one_row(doc.rows, { backend = "broken" })
    assert.equals(1, b.errors)
    -- the provider of a backend that never served comes from the policy
    local with_policy = report_json({ "failures", "--bucket", "1d", "--policy", policy_dir, log })
    assert.equals("openai", one_row(with_policy.rows, { backend = "primary" }).provider)
    assert.equals("azure", one_row(with_policy.rows, { backend = "broken" }).provider)
    local s = one_row(doc.rows, { backend = "secondary" })
    assert.same({ 0, 0 }, { s.errors, s.fallbacks })
    -- 4 fallen-back chats + 5 old-chat + 1 special were served by it
    assert.equals(10, s.requests)
    assert.equals("1d", doc.bucket)
  end)

  it("sets each team's spend against its budget and names who exceeded it, and when", function()
    local doc = report_json({ "budgets", "--policy", policy_dir, log })
    local blue = one_row(doc.rows, { team = "blue" })
    assert.equals(3 * TOKENS, blue.tokens) -- bob's two old-chat and carol's one special
    assert.near(3 * COST, blue.cost_usd, 1e-9)
    assert.equals("tokens:day:team", blue.limit)
    assert.equals("60 tokens/day", blue.budget)
    assert.equals(3 * TOKENS, blue.peak)
    assert.near(3 * TOKENS * 100 / 60, blue.used_pct, 0.1)
    assert.equals(2, blue.refused)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT", blue.first_refused)
    local red = one_row(doc.rows, { team = "red" })
    assert.equals(7 * TOKENS, red.tokens) -- 4 chat + 3 old-chat served
    assert.equals("100000 tokens/day", red.budget) -- its override
    assert.equals(0, red.refused)
    -- without the policy: spend, and the exceed events the records show
    local bare = report_json({ "budgets", log })
    local b2 = one_row(bare.rows, { team = "blue" })
    assert.same({ "tokens:day:team", 2, json.null }, { b2.limit, b2.refused, b2.budget })
  end)

  it("lists which exceptions were used, by whom, how often", function()
    local doc = report_json({ "exceptions", log })
    assert.equals(1, #doc.rows)
    local e = doc.rows[1]
    -- the catalog's grant comes before the quota refusal: all three count
    assert.same({ "EXC-REPORT-7", "carol", "c1", "blue", 3 },
      { e.exception, e.consumer, e.app, e.team, e.uses })
  end)

  it("groups denials by plugin and code", function()
    local doc = report_json({ "denials", log })
    assert.equals(3, #doc.rows, json.encode(doc.rows))
    assert.equals(2, one_row(doc.rows, { plugin = "catalog", code = "model_sunset", status = 410 }).denials)
    assert.equals(2, one_row(doc.rows, { plugin = "quota", code = "tokens_limit_exceeded", status = 429 }).denials)
    assert.equals(1, one_row(doc.rows, { plugin = "key-auth", status = 401 }).denials)
    -- no secret in a report: the keys never appear
    local st, text = report({ "report", "denials", log })
    assert.equals(0, st)
    for _, k in pairs(KEYS) do assert.is_nil(text:find(k, 1, true)) end
  end)

  it("prints aligned text tables by default", function()
    local st, out = report({ "report", "denials", log })
    assert.equals(0, st, out)
    local header = out:match("^[^\n]+")
    assert.matches("^plugin%s+code%s+status%s+denials", header)
    local col = header:find("denials", 1, true) + #"denials" - 1
    -- numbers are right-aligned under their header
    for line in out:gmatch("[^\n]+") do
      if line:find("model_sunset", 1, true) then
        assert.equals("2", line:sub(col, col))
      end
    end
    assert.matches("16 records from 16 lines", out)
  end)
end)

-- ---- a synthetic day -----------------------------------------------------------

-- One record; t is seconds since 2026-11-25T00:00:00Z.
local function record(t, fields)
  local r = { v = 1, request_id = "syn" .. t, method = "POST", path = "/v1/chat/completions",
              time = os.date("!%Y-%m-%dT%H:%M:%S", 1795564800 + t) .. ".250Z" }
  for k, v in pairs(fields) do r[k] = v end
  return json.encode(r)
end

-- Every 10 minutes each backend serves one request; from 14:00 to 14:59
-- openai's backend fails 30 times (a spike) and azure falls back 6 times.
local function day()
  local lines = {}
  for t = 0, 86399, 600 do
    lines[#lines + 1] = record(t, { status = 200, backend = "oai", provider = "openai",
      attempts = { { backend = "oai", status = 200, outcome = "served" } } })
    lines[#lines + 1] = record(t + 1, { status = 200, backend = "az", provider = "azure",
      attempts = { { backend = "az", status = 200, outcome = "served" } } })
  end
  for i = 0, 29 do
    lines[#lines + 1] = record(14 * 3600 + i * 100, { status = 502, backend = "oai", provider = "openai",
      upstream_error = "connect_error",
      attempts = { { backend = "oai", status = 0, error = "connect_error", outcome = "failed" } } })
  end
  for i = 0, 5 do
    lines[#lines + 1] = record(14 * 3600 + i * 500 + 7, { status = 200, backend = "oai", provider = "openai",
      attempts = { { backend = "az", status = 429, outcome = "next" },
                   { backend = "oai", status = 200, outcome = "served" } } })
  end
  return lines
end

describe("sluice report over a synthetic day", function()
  local dir, file
  setup(function()
    dir = proc.tmpdir()
    file = dir .. "/day.log"
    local lines = day()
    -- garbled lines: a torn write, a plain-text log line, a non-object
    table.insert(lines, 10, '{"time":"2026-11-25T01:00:00Z","status":50')
    table.insert(lines, 20, "sluice: [warn] something else")
    table.insert(lines, 30, "[1,2,3]")
    proc.write_file(file, table.concat(lines, "\n") .. "\n")
  end)
  teardown(function() proc.stop_all() end)

  it("shows the failure spike in its hour bucket, and only there", function()
    local doc = report_json({ "failures", file })
    local oai = find_rows(doc.rows, { backend = "oai" })
    assert.equals(24, #oai)
    local worst
    for _, r in ipairs(oai) do
      if not worst or r.errors > worst.errors then worst = r end
    end
    assert.equals("2026-11-25T14:00:00Z", worst.bucket)
    assert.equals(30, worst.errors)
    assert.equals("openai", worst.provider)
    for _, r in ipairs(oai) do
      if r ~= worst then assert.equals(0, r.errors, r.bucket) end
    end
    local az14 = one_row(doc.rows, { backend = "az", bucket = "2026-11-25T14:00:00Z" })
    assert.same({ 6, "azure" }, { az14.fallbacks, az14.provider })
    assert.equals(3, doc.skipped)
  end)

  it("marks the peak bucket in the text table", function()
    local st, out = report({ "report", "failures", file })
    assert.equals(0, st, out)
    local peak = {}
    for line in out:gmatch("[^\n]+") do
      if line:find("peak", 1, true) and not line:find("^bucket") then peak[#peak + 1] = line end
    end
    assert.equals(1, #peak, out)
    assert.matches("^2026%-11%-25T14:00:00Z%s+openai%s+oai", peak[1])
    assert.matches("3 unreadable lines skipped", out)
  end)

  it("keeps to --from and --to, and to smaller buckets", function()
    local doc = report_json({ "failures", "--bucket", "30m", "--from", "2026-11-25T14:00:00Z",
                              "--to", "2026-11-25T14:30:00Z", file })
    local oai = one_row(doc.rows, { backend = "oai" })
    assert.equals("2026-11-25T14:00:00Z", oai.bucket)
    assert.equals(18, oai.errors) -- 14:00:00 .. 14:28:20, every 100 s
    assert.equals(1, #find_rows(doc.rows, { backend = "oai" }))
  end)

  it("reads gzip logs and several files as one", function()
    local st, out = proc.run("gzip -kf " .. proc.quote(file)) -- writes day.log.gz
    assert.equals(0, st, out)
    local plain = report_json({ "failures", file })
    local gz = report_json({ "failures", file .. ".gz" })
    assert.same(plain.rows, gz.rows)
    local both = report_json({ "failures", file, file .. ".gz" })
    assert.equals(2 * plain.records, both.records)
    assert.equals(60, one_row(both.rows, { backend = "oai", bucket = "2026-11-25T14:00:00Z" }).errors)
  end)

  it("writes CSV: one header, then one line per row", function()
    local st, out = report({ "report", "failures", "--csv", file })
    assert.equals(0, st, out)
    local lines = {}
    for l in out:gmatch("[^\r\n]+") do
      if not l:find("^sluice report:") then lines[#lines + 1] = l end
    end
    assert.equals("bucket,provider,backend,requests,attempts,errors,fallbacks,failed_pct", lines[1])
    assert.equals(1 + 48, #lines)
  end)

  it("refuses an unknown report and an unreadable file clearly", function()
    local st, out = report({ "report", "nonsense", file })
    assert.equals(2, st)
    assert.matches("unknown report", out)
    st, out = report({ "report", "denials", dir .. "/missing.log" })
    assert.equals(1, st)
    assert.matches("missing.log", out)
    -- a gzip file cut short: what it held is reported, and the exit says so
    proc.run("gzip -kf " .. proc.quote(file))
    local gz = proc.read_file(file .. ".gz")
    proc.write_file(dir .. "/cut.gz", gz:sub(1, math.floor(#gz / 2)))
    st, out = report({ "report", "failures", "--json", dir .. "/cut.gz" })
    assert.equals(1, st)
    assert.matches("unexpected end of file", out)
    local doc = json.decode(out:match("{[^\n]+"))
    assert.is_true(doc.records > 10 and doc.records < #day(), out)
  end)
end)
