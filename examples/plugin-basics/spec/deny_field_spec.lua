-- deny_field_spec.lua — behaviour of the deny-field example plugin.
-- Run from the repository root:
--   ./build/sluice spec examples/plugin-basics/spec/deny_field_spec.lua
local t = require "sluice.test"

local PLUGINS = "examples/plugin-basics/plugins"
local AUDIT_NOTES = "examples/plugin-basics/spec/support/audit-notes.lua"

local function chain(config, with_notes)
  t.plugin_dirs = { PLUGINS }
  local items = { { name = "deny-field", config = config } }
  if with_notes then items[2] = { name = "audit-notes", path = AUDIT_NOTES } end
  return t.chain(items)
end

local RETIRED = { field = "model", values = { "text-davinci-003", "gpt-3.5-turbo-0301" },
                  reason = "this model is retired; use mock-model" }
local TEST_USERS = { field = "user", pattern = "^(test|qa)-", ignore_case = true,
                     code = "test_account_denied" }

describe("deny-field plugin", function()
  describe("allows", function()
    it("a value that is not listed", function()
      local res = t.request(chain(RETIRED), { json = { model = "mock-model" } })
      assert.equals("ok", res.action)
    end)

    it("a request whose body lacks the field", function()
      local res = t.request(chain(TEST_USERS), { json = { model = "mock-model" } })
      assert.equals("ok", res.action)
    end)

    it("a request without a JSON body", function()
      local res = t.request(chain(RETIRED), { method = "GET", path = "/v1/models" })
      assert.equals("ok", res.action)
      res = t.request(chain(RETIRED), { body = "model=text-davinci-003" })
      assert.equals("ok", res.action)
    end)

    it("a value the pattern does not match", function()
      local res = t.request(chain(TEST_USERS), { json = { user = "alice-test" } })
      assert.equals("ok", res.action)
    end)

    it("a listed value in another case unless ignore_case is set", function()
      local res = t.request(chain(RETIRED), { json = { model = "TEXT-DAVINCI-003" } })
      assert.equals("ok", res.action)
    end)

    it("a field whose value is an object or a list", function()
      local res = t.request(chain(RETIRED), { json = { model = { "text-davinci-003" } } })
      assert.equals("ok", res.action)
    end)
  end)

  describe("denies", function()
    it("a listed value with 403 and a message naming the field and the rule", function()
      local res = t.request(chain(RETIRED), { json = { model = "text-davinci-003" } })
      assert.equals("deny", res.action)
      assert.equals(403, res.status)
      assert.equals("field_value_denied", res.code)
      assert.equals("deny-field", res.plugin)
      assert.equals("the value of 'model' is not allowed by policy: "
        .. "this model is retired; use mock-model", res.message)
    end)

    it("a value matching the pattern, case-insensitively when asked", function()
      local res = t.request(chain(TEST_USERS), { json = { user = "QA-bob@example.com" } })
      assert.equals("deny", res.action)
      assert.equals(403, res.status)
      assert.equals("test_account_denied", res.code)
    end)

    it("without echoing the value, which may be personal or secret", function()
      local res = t.request(chain(TEST_USERS), { json = { user = "test-carol@example.com" } })
      assert.equals("deny", res.action)
      assert.is_nil(res.message:find("carol", 1, true))
      assert.equals("the value of 'user' is not allowed by policy", res.message)
    end)

    it("by a dotted path into nested objects", function()
      local res = t.request(chain({ field = "metadata.env", values = { "prod-eu" } }),
        { json = { model = "mock-model", metadata = { env = "prod-eu" } } })
      assert.equals("deny", res.action)
    end)

    it("numbers by their text", function()
      local res = t.request(chain({ field = "n", values = { "4" } }), { json = { n = 4 } })
      assert.equals("deny", res.action)
    end)

    it("and notes the field, not the value, in the audit notes", function()
      local c = chain(TEST_USERS, true)
      local res = t.request(c, { json = { user = "test-dave" } })
      assert.equals("deny", res.action)
      local record = t.log(c, res.ctx, { status = 403 })
      assert.equals(1, #record.notes)
      assert.same({ plugin = "deny-field", key = "denied_field", value = "user" },
        record.notes[1])
    end)
  end)

  describe("refuses a configuration", function()
    local function config_error(config)
      t.plugin_dirs = { PLUGINS }
      local c, err = t.try_chain({ { name = "deny-field", config = config } })
      assert.is_nil(c)
      return err
    end

    it("without a field", function()
      assert.matches("config%.field: is required", config_error({ values = { "x" } }))
    end)

    it("with neither values nor a pattern", function()
      assert.matches("init failed: deny%-field needs 'values', 'pattern' or both",
        config_error({ field = "model" }))
    end)

    it("with a pattern that is not a valid regular expression", function()
      assert.matches("config%.pattern: invalid regular expression",
        config_error({ field = "user", pattern = "(" }))
    end)

    it("with values that are not a list of strings", function()
      assert.matches("config%.values: expected a list",
        config_error({ field = "model", values = "gpt-4" }))
      assert.matches("config%.values%[2%]: expected a string",
        config_error({ field = "model", values = { "a", 2 } }))
    end)
  end)
end)
