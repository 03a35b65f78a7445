-- catalog_spec.lua — the catalog plugin: allowlists, deprecation, sunset.
local t = require "sluice.test"
local json = require "sluice.json"

local DAY = 86400
local function day(offset)
  return os.date("!%Y-%m-%d", os.time() + offset * DAY)
end

local MODELS = {
  ["gpt-4o"] = { targets = { { backend = "openai", model = "gpt-4o-2024-08-06" } }, aliases = { "gpt-4o-latest" } },
  ["gpt-4"] = { targets = { { backend = "openai" } }, deprecated = day(-30), sunset = day(-1),
                replacement = "gpt-4o" },
  ["gpt-4-turbo"] = { targets = { { backend = "openai" } }, deprecated = day(-2), sunset = day(60),
                      replacement = "gpt-4o" },
  ["o-next"] = { targets = { { backend = "openai" } }, deprecated = day(10) },
}

local function chain()
  t.plugin_dirs = { "plugins", "spec/fixtures/plugins" }
  return t.chain({ { name = "test-consumer" }, { name = "catalog" } },
                 { models = MODELS, backends = { openai = { provider = "openai" } } })
end

local function call(model, consumer, path)
  local headers = { ["content-type"] = "application/json" }
  if consumer then headers["x-test-consumer"] = json.encode(consumer) end
  return t.request(chain(), { path = path, method = path and "GET" or "POST", headers = headers,
                              json = not path and { model = model, messages = {} } or nil })
end

describe("catalog plugin", function()
  it("serves an approved model by its name or alias, with its catalog targets", function()
    local res = call("gpt-4o-latest")
    assert.equals("ok", res.action)
    assert.equals("gpt-4o", res.model)
    assert.same({ "openai" }, res.targets)
  end)

  it("leaves unknown models to the front door's 404", function()
    local res = call("gpt-5")
    assert.equals("deny", res.action)
    assert.equals(404, res.status)
    assert.equals("model_not_found", res.code)
  end)

  it("refuses a model outside the consumer's allowlist with 403", function()
    local res = call("gpt-4o", { id = "billing", app = "billing-bot", models = { "gpt-4-turbo" } })
    assert.equals("deny", res.action)
    assert.equals(403, res.status)
    assert.equals("model_not_allowed", res.code)
    assert.matches("billing%-bot", res.message)
    assert.equals("catalog", res.plugin)
  end)

  it("allows every model to a consumer whose allowlist has *", function()
    assert.equals("ok", call("gpt-4o", { id = "ops", models = { "*" } }).action)
  end)

  it("matches the allowlist against the public name, not the alias the caller used", function()
    assert.equals("ok", call("gpt-4o-latest", { id = "a", models = { "gpt-4o" } }).action)
  end)

  it("refuses a model past its sunset with 410, naming the replacement", function()
    local res = call("gpt-4")
    assert.equals(410, res.status)
    assert.equals("model_sunset", res.code)
    assert.matches("use 'gpt%-4o'", res.message)
    assert.matches(day(-1), res.message, 1, true)
  end)

  it("serves a deprecated model with Deprecation, Sunset and warning headers and a warn decision", function()
    local res = call("gpt-4-turbo")
    assert.equals("ok", res.action)
    local h = res.response_headers
    assert.matches("^@%d+$", h["deprecation"])
    assert.matches("GMT$", h["sunset"])
    assert.matches("deprecated and will be retired on " .. day(60), h["x-sluice-warning"], 1, true)
    local d = t.decisions(res.ctx)
    assert.equals("warn", d[#d].outcome)
    assert.equals("catalog", d[#d].plugin)
  end)

  it("does not warn before the deprecation date", function()
    local res = call("o-next")
    assert.equals("ok", res.action)
    assert.is_nil(res.response_headers["deprecation"])
  end)

  it("lists only the caller's allowed models that are not past their sunset", function()
    local res = call(nil, { id = "x", models = { "gpt-4", "gpt-4-turbo" } }, "/v1/models")
    assert.equals("respond", res.action)
    local ids = {}
    for _, m in ipairs(json.decode(res.body).data) do ids[#ids + 1] = m.id end
    assert.same({ "gpt-4-turbo" }, ids)
    res = call(nil, nil, "/v1/models")
    ids = {}
    for _, m in ipairs(json.decode(res.body).data) do ids[#ids + 1] = m.id end
    assert.same({ "gpt-4-turbo", "gpt-4o", "o-next" }, ids)
  end)

  it("answers denials at the Anthropic door in Anthropic's error shape", function()
    local res = t.request(chain(), { path = "/v1/messages", headers = {
        ["x-test-consumer"] = json.encode({ id = "billing", app = "billing-bot", models = { "gpt-4-turbo" } }) },
      json = { model = "gpt-4o", max_tokens = 5, messages = { { role = "user", content = "hi" } } } })
    assert.equals("respond", res.action)
    assert.equals(403, res.status)
    local e = json.decode(res.body)
    assert.equals("error", e.type)
    assert.equals("permission_error", e.error.type)
    assert.matches("not approved for billing%-bot", e.error.message)
    res = t.request(chain(), { path = "/v1/messages", json = { model = "nope", max_tokens = 5,
                                                           messages = { { role = "user", content = "hi" } } } })
    assert.equals(404, res.status)
    assert.equals("not_found_error", json.decode(res.body).error.type)
  end)

  it("lets no model out through a path other than the front doors", function()
    for _, path in ipairs({ "/v1/responses", "/v1/completions", "/openai/deployments/gpt-4o/chat/completions" }) do
      local res = t.request(chain(), { path = path, json = { model = "gpt-4o", input = "hi" } })
      assert.equals("deny", res.action, path)
      assert.equals(404, res.status, path)
      assert.equals("not_found", res.code, path)
    end
    -- calls that name no model pass through under /v1/ only
    assert.equals("ok", t.request(chain(), { method = "GET", path = "/v1/files" }).action)
    assert.equals(404, t.request(chain(), { method = "GET", path = "/admin/anything" }).status)
  end)

  it("refuses a catalog whose replacement is not in it, naming the key", function()
    local ok, err = t.try_chain({ { name = "catalog" } },
      { models = { a = { targets = { { backend = "x" } }, replacement = "b" } }, backends = { x = {} } })
    assert.is_nil(ok)
    assert.matches("models%.a%.replacement: no model named 'b'", err)
  end)

  it("refuses a sunset that is not a date", function()
    local ok, err = t.try_chain({ { name = "catalog" } },
      { models = { a = { targets = { { backend = "x" } }, sunset = "soon" } }, backends = { x = {} } })
    assert.is_nil(ok)
    assert.matches("models%.a%.sunset: expected a date", err)
  end)
end)
