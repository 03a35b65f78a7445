-- End-to-end: a policy exception granting a model to one application, in
-- the real gateway behind key-auth and catalog. It serves that app until
-- its expiry second and not after — with no reload — and every request it
-- helped names it in the access log's audit record; other apps never get
-- it; `sluice check` lists it as live and expiring.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"
local json = require "sluice.json"

local KEYS = { claims = "sk-exc-claims-1111", other = "sk-exc-other-2222" }

local hash_of = proc.hash_key

local function iso(epoch) return os.date("!%Y-%m-%dT%H:%M:%SZ", epoch) end

local function policy(mock_url, expires)
  return ([[
backends:
  mock: { provider: openai, url: "%s", region: local }
models:
  gpt-4o: { targets: [ { backend: mock, model: mock-model } ] }
  gpt-4.1: { targets: [ { backend: mock, model: mock-model } ] }
exceptions:
  - id: EXC-2026-014
    owner: jane.doe@example.com
    reason: pilot of gpt-4.1 for claims triage
    created: %s
    expires: %s
    apps: [claims-triage]
    grants: { models: [gpt-4.1] }
plugins:
  - name: key-auth
    config:
      consumers:
        claims-bot:
          app: claims-triage
          team: claims
          models: [gpt-4o]
          keys: [ { hash: "%s" } ]
        other-bot:
          app: marketing
          models: [gpt-4o]
          keys: [ { hash: "%s" } ]
  - name: catalog
]]):format(mock_url, iso(os.time() - 60), expires, hash_of(KEYS.claims), hash_of(KEYS.other))
end

local function chat(port, who, model)
  return http.request(port, { method = "POST", path = "/v1/chat/completions",
    headers = { ["content-type"] = "application/json", authorization = "Bearer " .. KEYS[who] },
    body = json.encode({ model = model, messages = { { role = "user", content = "hi" } } }) })
end

-- The access-log records of the requests with these ids (waits for the flush).
local function records(path, ids)
  local want, found = {}, {}
  for _, id in ipairs(ids) do want[id] = true end
  local deadline = proc.now() + 5
  repeat
    found = {}
    for line in ((proc.read_file(path) or "") .. ""):gmatch("[^\n]+") do
      local r = json.decode(line)
      if r and want[r.request_id] then found[r.request_id] = r end
    end
    local n = 0
    for _ in pairs(found) do n = n + 1 end
    if n == #ids then return found end
    proc.sleep(0.1)
  until proc.now() > deadline
  error("access log lacks some of the requests")
end

describe("a policy exception in the running gateway", function()
  local mock, gw, expires_at, log_path

  setup(function()
    mock = proc.mock()
    -- expires on a whole second a few seconds from now (the gateway starts
    -- and answers slower under valgrind)
    expires_at = os.time() + math.ceil(4 * proc.slow)
    local dir = proc.tmpdir()
    log_path = dir .. "/access.log"
    gw = proc.gateway({ dir = dir, policy = policy(mock.url, iso(expires_at)),
                        config = { log = { access = log_path } } })
  end)

  teardown(function() proc.stop_all() end)

  it("is listed by sluice check as live and expiring", function()
    local status, out = proc.sluice({ "check", "-c", gw.config_path, gw.policy_dir })
    assert.equals(0, status, out)
    assert.matches("exceptions: 1 live, 1 expiring within 7 days", out)
    assert.matches("EXPIRING EXC%-2026%-014  owner jane%.doe@example%.com", out)
  end)

  it("serves the granted model to its app until the expiry second, then refuses it", function()
    local served = {}
    -- before expiry: the app is served; the other app never is
    while os.time() < expires_at - 1 do
      local res = assert(chat(gw.port, "claims", "gpt-4.1"))
      assert.equals(200, res.status, res.body)
      served[#served + 1] = res.headers["x-request-id"]
      local no = assert(chat(gw.port, "other", "gpt-4.1"))
      assert.equals(403, no.status)
      proc.sleep(0.25)
    end
    -- wait into the expiry second itself
    while os.time() < expires_at do proc.sleep(0.05) end
    local res = assert(chat(gw.port, "claims", "gpt-4.1"))
    assert.equals(403, res.status, res.body)
    assert.equals("model_not_allowed", http.error_of(res).code)
    -- its normal model still works
    assert.equals(200, assert(chat(gw.port, "claims", "gpt-4o")).status)
    assert.is_true(#served >= 2)
    local recs = records(log_path, served)
    for _, id in ipairs(served) do
      assert.same({ "EXC-2026-014" }, recs[id].exceptions)
      assert.equals("claims-bot", recs[id].consumer.id)
    end
  end)
end)
