-- add_header_spec.lua — behaviour of the add-header example plugin.
-- Run from the repository root:
--   ./build/sluice spec examples/plugin-basics/spec/add_header_spec.lua
local t = require "sluice.test"

local PLUGINS = "examples/plugin-basics/plugins"
local AUDIT_NOTES = "examples/plugin-basics/spec/support/audit-notes.lua"

local function chain(config)
  t.plugin_dirs = { PLUGINS }
  return t.chain({
    { name = "add-header", config = config },
    { name = "audit-notes", path = AUDIT_NOTES },
  })
end

local function notes_of(c, res)
  local record = t.log(c, res.ctx, { status = 200 })
  local by_key = {}
  for _, n in ipairs(record.notes or {}) do by_key[n.key] = n end
  return by_key
end

describe("add-header plugin", function()
  it("adds the owning team under x-team by default", function()
    local c = chain({ value = "platform-tools" })
    local res = t.request(c, { json = { model = "mock-model" } })
    assert.equals("ok", res.action)
    assert.equals("platform-tools", res.header_map["x-team"])
  end)

  it("uses the header name from its configuration, in lowercase", function()
    local c = chain({ header = "X-Cost-Center", value = "cc-4711" })
    local res = t.request(c, { json = { model = "mock-model" } })
    assert.equals("cc-4711", res.header_map["x-cost-center"])
    assert.is_nil(res.header_map["x-team"])
  end)

  it("replaces a value the client sent, so no client can claim another team", function()
    local c = chain({ value = "platform-tools" })
    local res = t.request(c, { headers = { ["X-Team"] = "someone-else" },
                               json = { model = "mock-model" } })
    assert.equals("platform-tools", res.header_map["x-team"])
  end)

  it("keeps the client's other headers", function()
    local c = chain({ value = "platform-tools" })
    local res = t.request(c, { headers = { ["content-type"] = "application/json" },
                               json = { model = "mock-model" } })
    assert.equals("application/json", res.header_map["content-type"])
  end)

  it("notes the header it set in the audit notes", function()
    local c = chain({ value = "platform-tools" })
    local res = t.request(c, { json = { model = "mock-model" } })
    local note = notes_of(c, res).owner_header
    assert.equals("add-header", note.plugin)
    assert.equals("x-team: platform-tools", note.value)
  end)

  it("leaves the body untouched", function()
    local c = chain({ value = "platform-tools" })
    local res = t.request(c, { json = { model = "mock-model" } })
    assert.is_nil(res.body)
  end)

  describe("refuses a configuration", function()
    local function config_error(config)
      t.plugin_dirs = { PLUGINS }
      local c, err = t.try_chain({ { name = "add-header", config = config } })
      assert.is_nil(c)
      return err
    end

    it("without a value", function()
      assert.matches("plugins%[1%]%.config%.value: is required", config_error({}))
    end)

    it("with a header name that is not a token", function()
      assert.matches("config%.header: is not a valid HTTP header name",
        config_error({ header = "x team", value = "a" }))
    end)

    it("with a header the gateway sets itself", function()
      assert.matches("config%.header: is set by the gateway itself",
        config_error({ header = "Authorization", value = "Bearer x" }))
    end)

    it("with a line break in the value", function()
      assert.matches("config%.value: must not contain line breaks",
        config_error({ value = "a\r\nx-evil: 1" }))
    end)

    it("with a key the schema does not know", function()
      assert.matches("config%.team: unknown field",
        config_error({ value = "a", team = "b" }))
    end)

    it("with a value that is not a string", function()
      assert.matches("config%.value: expected a string", config_error({ value = 42 }))
    end)
  end)
end)
