-- exceptions_spec.lua — the policy's exceptions: owned, reasoned, expiring,
-- validated at load, granting only what they say to whom they name.
local t = require "sluice.test"
local json = require "sluice.json"
local proc = require "spec.helpers.proc"

local function iso(epoch) return os.date("!%Y-%m-%dT%H:%M:%SZ", epoch) end

local MODELS = {
  ["gpt-4o"] = { targets = { { backend = "mock" } } },
  ["gpt-4.1"] = { targets = { { backend = "mock" } } },
}

local function exc(over)
  local e = { id = "EXC-1", owner = "jane@example.com", reason = "pilot", created = iso(os.time() - 60),
              expires = iso(os.time() + 3600), apps = { "claims-triage" }, grants = { models = { "gpt-4.1" } } }
  for k, v in pairs(over or {}) do
    if v == false then e[k] = nil else e[k] = v end -- false: leave the key out
  end
  return e
end

local function chain(list, max)
  t.plugin_dirs = { "plugins", "spec/fixtures/plugins" }
  return t.chain({ { name = "test-consumer" }, { name = "catalog" } },
                 { models = MODELS, exceptions = list, exceptions_max_lifetime = max })
end

local CLAIMS = { id = "claims-bot", app = "claims-triage", team = "claims", models = { "gpt-4o" } }
local OTHER = { id = "other-bot", app = "other", team = "claims", models = { "gpt-4o" } }

local function call(c, consumer, model)
  return t.request(c, { headers = { ["x-test-consumer"] = json.encode(consumer) },
                        json = { model = model, messages = {} } })
end

describe("policy exceptions", function()
  describe("at load", function()
    local function refused(e, pattern, max)
      local ok, err = t.try_chain({ { name = "catalog" } },
        { models = MODELS, exceptions = { e }, exceptions_max_lifetime = max })
      assert.is_nil(ok)
      assert.matches(pattern, err)
    end

    it("refuses an exception without an owner", function()
      refused(exc({ owner = false }), "exceptions%[1%]%.owner: required")
    end)
    it("refuses an exception without an expiry", function()
      refused(exc({ expires = false }), "exceptions%[1%]%.expires: required: every exception expires")
    end)
    it("refuses an exception living longer than the policy's maximum", function()
      refused(exc({ expires = iso(os.time() + 40 * 86400) }),
              "exceptions%[1%]%.expires: the exception would live 40 days; policy allows at most 30", "30d")
    end)
    it("refuses an exception that names no one", function()
      refused(exc({ apps = false }), "exceptions%[1%]: name who it applies to")
    end)
    it("refuses a grant it does not know", function()
      refused(exc({ grants = { wishes = { "x" } } }), "exceptions%[1%]%.grants%.wishes: unknown grant")
    end)
    it("refuses the same id twice", function()
      local ok, err = t.try_chain({ { name = "catalog" } }, { models = MODELS, exceptions = { exc(), exc() } })
      assert.is_nil(ok)
      assert.matches("exceptions%[2%]%.id: the id 'EXC%-1' is used twice", err)
    end)
    it("refuses an unknown policy section, so a typo is not silently ignored", function()
      local runtime = require "sluice.runtime"
      local ok, err = runtime.compile({ version = "x", time_budget = 100, plugins = {}, backends = {},
        files = { { path = "p.yaml", lines = {}, root = { excpetions = {} } } } })
      assert.is_nil(ok)
      assert.matches("p%.yaml:%d+: excpetions: unknown policy section", err)
    end)
  end)

  describe("per request", function()
    it("grants the model to the app it names, with its id in the audit record", function()
      local c = chain({ exc() })
      local res = call(c, CLAIMS, "gpt-4.1")
      assert.equals("ok", res.action)
      local _, audit = t.log(c, res.ctx)
      assert.same({ "EXC-1" }, audit.exceptions)
      assert.matches("allowed by exception EXC%-1", audit.decisions[1].reason)
    end)

    it("grants nothing to a consumer it does not name", function()
      local res = call(chain({ exc() }), OTHER, "gpt-4.1")
      assert.equals(403, res.status)
    end)

    it("lists the granted model in /v1/models for that app only", function()
      local c = chain({ exc() })
      local function ids(consumer)
        local res = t.request(c, { method = "GET", path = "/v1/models",
                                   headers = { ["x-test-consumer"] = json.encode(consumer) } })
        local out = {}
        for _, m in ipairs(json.decode(res.body).data) do out[#out + 1] = m.id end
        return out
      end
      assert.same({ "gpt-4.1", "gpt-4o" }, ids(CLAIMS))
      assert.same({ "gpt-4o" }, ids(OTHER))
    end)

    it("stops applying at its expiry second, without a reload", function()
      local c = chain({ exc({ expires = iso(os.time() + 1) }) })
      assert.equals("ok", call(c, CLAIMS, "gpt-4.1").action)
      proc.sleep(2.1)
      local res = call(c, CLAIMS, "gpt-4.1")
      assert.equals(403, res.status)
      assert.equals("model_not_allowed", res.code)
    end)

    it("does not apply before it was created", function()
      local res = call(chain({ exc({ created = iso(os.time() + 600), expires = iso(os.time() + 1200) }) }),
                       CLAIMS, "gpt-4.1")
      assert.equals(403, res.status)
    end)
  end)

  it("reports live exceptions and those expiring within 7 days", function()
    local runtime = require "sluice.runtime"
    local c = chain({ exc({ id = "SOON", expires = iso(os.time() + 3 * 86400) }),
                      exc({ id = "LATER", expires = iso(os.time() + 20 * 86400) }),
                      exc({ id = "GONE", created = iso(os.time() - 86400), expires = iso(os.time() - 10) }) })
    local text = runtime.exceptions(c, "text")
    assert.matches("exceptions: 2 live, 1 expiring within 7 days", text)
    assert.matches("EXPIRING SOON  owner jane@example.com", text)
    assert.matches("\n  LATER  owner", text)
    assert.is_nil(text:find("GONE", 1, true))
    local list = json.decode(runtime.exceptions(c, "json"))
    assert.equals("SOON", list[1].id)
    assert.is_true(list[1].expiring)
  end)
end)
