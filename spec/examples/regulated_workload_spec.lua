-- regulated_workload_spec.lua — examples/regulated-workload, driven as its
-- applications would: through the real OpenAI SDK (npm `openai`) against
-- the example's own sluice.yaml and policy (ports moved to free ones).
-- Each rule bites: confidential data stays on the EU deployment, a caller
-- may raise its data class but not lower it, card numbers and IBANs are
-- refused without ever reaching the provider or a log, the model past its
-- sunset is refused with its replacement named, the deprecated one warns,
-- and only the catalog's allowed models are served to each application.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"
local readme = require "spec.helpers.readme"
local json = require "sluice.json"

local EXAMPLE = "examples/regulated-workload"
local SDK_DIR = "spec/sdk"
local CLAIMS, MARKETING = "sk-claims-triage-demo", "sk-marketing-copy-demo"
local IBAN = "DE89 3704 0044 0532 0130 00"
local CARD = "4111 1111 1111 1111"

local ensure_sdks = proc.ensure_sdks

-- One SDK call: what the application saw.
local function sdk(base, key, model, opts)
  opts = opts or {}
  local env = "SLUICE_APP_KEY=" .. proc.quote(key or "")
  if opts.headers then env = env .. " SLUICE_HEADERS=" .. proc.quote(json.encode(opts.headers)) end
  if opts.prompt then env = env .. " SLUICE_PROMPT=" .. proc.quote(opts.prompt) end
  local status, out = proc.run(("cd %s && %s timeout 60 node drive.mjs openai %s %s %s"):format(
    SDK_DIR, env, base, model, opts.scenario or "chat-headers"))
  assert(status == 0, out)
  return assert(json.decode(out:match("({.*})%s*$") or ""), "no JSON from the SDK driver:\n" .. out)
end

describe("examples/regulated-workload", function()
  local base, mock_port, dir, gw

  setup(function()
    ensure_sdks()
    local port = proc.free_port()
    mock_port = proc.free_port()
    dir = proc.tmpdir()
    os.execute("cp -r " .. EXAMPLE .. "/policies " .. proc.quote(dir) .. "/")
    local pol = assert(proc.read_file(dir .. "/policies/policy.yaml"))
    proc.write_file(dir .. "/policies/policy.yaml", (pol:gsub("127%.0%.0%.1:8093", "127.0.0.1:" .. mock_port)))
    local cfg = assert(proc.read_file(EXAMPLE .. "/sluice.yaml"))
    cfg = cfg:gsub("127%.0%.0%.1:8092", "127.0.0.1:" .. port):gsub("127%.0%.0%.1:8093", "127.0.0.1:" .. mock_port)
      :gsub("access: stdout", "access: " .. dir .. "/access.log")
    proc.write_file(dir .. "/sluice.yaml", cfg)
    gw = proc.spawn("env AZURE_OPENAI_EU_KEY=az-eu-demo OPENAI_API_KEY=oa-us-demo "
      .. proc.sluice_cmd({ "run", "-c", dir .. "/sluice.yaml" }), dir, "regulated")
    proc.wait_port(gw, port)
    proc.wait_port(gw, mock_port)
    base = "http://127.0.0.1:" .. port
  end)

  teardown(function() proc.stop_all() end)

  local function mock_requests()
    local res = assert(http.request(mock_port, { path = "/mock/requests" }))
    return json.decode(res.body).requests
  end

  it("answers the README's commands as shown", function()
    local cmds = readme.commands(assert(proc.read_file(EXAMPLE .. "/README.md")), "## Run it")
    assert.equals(4, #cmds)
    for _, c in ipairs(cmds) do readme.check(c, { ["127.0.0.1:8092"] = base:match("//(.*)$") }) end
  end)

  it("passes sluice check as shipped", function()
    local status, out = proc.sluice({ "check", "-c", EXAMPLE .. "/sluice.yaml" })
    assert.equals(0, status, out)
    assert.matches("%(2 backends, 5 plugins%)", out)
  end)

  it("serves confidential claims work only from the EU deployment", function()
    local r = sdk(base, CLAIMS, "gpt-4o")
    assert.is_true(r.ok, r.error)
    assert.equals("gpt-4o", r.model)
    assert.equals("azure-eu", r.headers["x-sluice-backend"])
    local last = mock_requests()
    assert.matches("^/openai/deployments/gpt%-4o%-eu/chat/completions", last[#last].path)
  end)

  it("serves internal marketing work from the first target, OpenAI in the US", function()
    local r = sdk(base, MARKETING, "gpt-4o")
    assert.is_true(r.ok, r.error)
    assert.equals("openai-us", r.headers["x-sluice-backend"])
  end)

  it("lets marketing raise a request to confidential, which moves it to the EU", function()
    local r = sdk(base, MARKETING, "gpt-4o", { headers = { ["x-sluice-data-class"] = "confidential" } })
    assert.is_true(r.ok, r.error)
    assert.equals("azure-eu", r.headers["x-sluice-backend"])
  end)

  it("never lets claims lower its data class to reach the US", function()
    local r = sdk(base, CLAIMS, "gpt-4o", { headers = { ["x-sluice-data-class"] = "public" } })
    assert.is_false(r.ok)
    assert.equals(403, r.status)
    assert.equals("data_class_lowered", r.code)
  end)

  it("refuses restricted data that no backend may receive, saying why", function()
    local r = sdk(base, CLAIMS, "gpt-4o", { headers = { ["x-sluice-data-class"] = "restricted" } })
    assert.equals(403, r.status)
    assert.equals("data_boundary", r.code)
    assert.matches("restricted data", r.error)
  end)

  it("refuses an IBAN or a card number, naming the class and never the value", function()
    local before = #mock_requests()
    for _, case in ipairs({ { "IBAN", "Refund to " .. IBAN .. " please" },
                            { "CREDIT_CARD", "card " .. CARD .. " was charged twice" } }) do
      local r = sdk(base, CLAIMS, "gpt-4o", { prompt = case[2] })
      assert.equals(400, r.status)
      assert.equals("sensitive_data_blocked", r.code)
      assert.matches(case[1], r.error, 1, true)
      assert.is_nil(r.error:find(case[2]:match("%d[%d ]+%d"), 1, true))
    end
    assert.equals(before, #mock_requests()) -- nothing reached the provider
  end)

  it("sends e-mail addresses only as placeholders", function()
    local r = sdk(base, CLAIMS, "gpt-4o", { prompt = "Claimant wrote from jo.smith@example.org today" })
    assert.is_true(r.ok, r.error)
    local last = mock_requests()
    local body = last[#last].body
    assert.matches("[EMAIL_1]", body, 1, true)
    assert.is_nil(body:find("jo.smith@example.org", 1, true))
  end)

  it("refuses gpt-4 after its sunset, naming gpt-4o", function()
    local r = sdk(base, CLAIMS, "gpt-4")
    assert.equals(410, r.status)
    assert.equals("model_sunset", r.code)
    assert.matches("use 'gpt-4o'", r.error, 1, true)
  end)

  it("serves deprecated gpt-4-turbo with Deprecation and Sunset headers", function()
    local r = sdk(base, CLAIMS, "gpt-4-turbo")
    assert.is_true(r.ok, r.error)
    assert.matches("^@%d+$", r.headers["deprecation"])
    assert.equals("Wed, 30 Jun 2027 00:00:00 GMT", r.headers["sunset"])
    assert.matches("deprecated", r.headers["x-sluice-warning"])
  end)

  it("refuses a model outside marketing's allowlist, and callers without a key", function()
    local r = sdk(base, MARKETING, "gpt-4-turbo")
    assert.equals(403, r.status)
    assert.equals("model_not_allowed", r.code)
    r = sdk(base, "sk-not-issued", "gpt-4o")
    assert.equals(401, r.status)
    local models = sdk(base, MARKETING, "gpt-4o", { scenario = "models" })
    assert.same({ "gpt-4o" }, models.ids)
  end)

  it("keeps every decision in the audit record and no blocked value in any log", function()
    proc.sleep(1.2) -- the access log is flushed by time
    local text = assert(proc.read_file(dir .. "/access.log"))
    for _, secret in ipairs({ IBAN, CARD, "jo.smith@example.org", CLAIMS, MARKETING }) do
      assert.is_nil(text:find(secret, 1, true), "found in the access log: " .. secret)
    end
    local seen = {}
    for line in text:gmatch("[^\n]+") do
      local rec = json.decode(line)
      for _, d in ipairs(rec and rec.decisions or {}) do seen[d.plugin .. ":" .. d.outcome] = true end
    end
    for _, want in ipairs({ "key-auth:allow", "data-boundary:modify", "data-boundary:deny", "redact:deny",
                            "redact:modify", "catalog:deny", "catalog:warn", "key-auth:deny" }) do
      assert.is_true(seen[want] == true, "no " .. want .. " decision in the audit record")
    end
    local log = proc.log(gw) or ""
    assert.is_nil(log:find(IBAN, 1, true))
    assert.is_nil(log:find(CARD, 1, true))
  end)
end)
