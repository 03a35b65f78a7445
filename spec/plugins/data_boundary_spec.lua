-- data_boundary_spec.lua — the data-boundary plugin: classes, regions,
-- raising but never lowering, and the targets it removes.
local t = require "sluice.test"
local json = require "sluice.json"

local BACKENDS = {
  ["azure-eu"] = { provider = "azure", region = "eu-west", data_classes = { "public", "internal", "confidential" } },
  ["azure-us"] = { provider = "azure", region = "us-east", data_classes = { "public", "internal", "confidential" } },
  ["openai"] = { provider = "openai", region = "us", data_classes = { "public", "internal" } },
  ["unlabelled"] = { provider = "openai", region = "eu-west" },
}
local MODELS = {
  ["gpt-4o"] = { targets = { { backend = "openai", model = "gpt-4o" }, { backend = "azure-us", model = "gpt4o-us" },
                             { backend = "azure-eu", model = "gpt4o-eu" } } },
  ["cheap"] = { targets = { { backend = "unlabelled" } } },
}

local function chain(config)
  t.plugin_dirs = { "plugins", "spec/fixtures/plugins" }
  return t.chain({ { name = "test-consumer" }, { name = "data-boundary", config = config } },
                 { models = MODELS, backends = BACKENDS })
end

local function call(consumer, extra_headers, model, config)
  local headers = { ["content-type"] = "application/json" }
  if consumer then headers["x-test-consumer"] = json.encode(consumer) end
  for k, v in pairs(extra_headers or {}) do headers[k] = v end
  return t.request(chain(config), { headers = headers, json = { model = model or "gpt-4o", messages = {} } })
end

local EU_CONFIDENTIAL = { id = "claims", data_class = "confidential", regions = { "eu-west" } }

describe("data-boundary plugin", function()
  it("keeps every target that may receive the request's class", function()
    local res = call({ id = "a", data_class = "internal" })
    assert.equals("ok", res.action)
    assert.same({ "openai", "azure-us", "azure-eu" }, res.targets)
  end)

  it("removes targets that may not receive the class, keeping the catalog's models", function()
    local res = call({ id = "a", data_class = "confidential" })
    assert.equals("ok", res.action)
    assert.same({ "azure-us", "azure-eu" }, res.targets)
    local d = t.decisions(res.ctx)
    assert.equals("modify", d[#d].outcome)
    assert.matches("openai may not receive confidential data", d[#d].reason, 1, true)
  end)

  it("removes targets outside the consumer's regions", function()
    local res = call(EU_CONFIDENTIAL)
    assert.same({ "azure-eu" }, res.targets)
    assert.matches("azure%-us is in region us%-east, outside eu%-west", t.decisions(res.ctx)[1].reason)
  end)

  it("refuses with 403 saying why when no target remains", function()
    local res = call({ id = "a", data_class = "restricted" })
    assert.equals("deny", res.action)
    assert.equals(403, res.status)
    assert.equals("data_boundary", res.code)
    assert.matches("restricted data", res.message)
  end)

  it("sends only the lowest class to a backend that declares no classes", function()
    assert.equals("ok", call({ id = "a", data_class = "public" }, nil, "cheap").action)
    assert.equals(403, call({ id = "a", data_class = "internal" }, nil, "cheap").status)
  end)

  it("uses default_class for callers without a consumer", function()
    assert.equals(403, call(nil, nil, "cheap").status)
    assert.equals("ok", call(nil, nil, "cheap", { default_class = "public" }).action)
  end)

  it("lets a caller raise the class with the header, and removes the header", function()
    local res = call({ id = "a", data_class = "internal" }, { ["x-sluice-data-class"] = "Confidential" })
    assert.equals("ok", res.action)
    assert.same({ "azure-us", "azure-eu" }, res.targets)
    assert.is_nil(res.header_map["x-sluice-data-class"])
  end)

  it("never lets the header lower the class", function()
    local res = call(EU_CONFIDENTIAL, { ["x-sluice-data-class"] = "public" })
    assert.equals(403, res.status)
    assert.equals("data_class_lowered", res.code)
  end)

  it("refuses an unknown class in the header with 400", function()
    local res = call(EU_CONFIDENTIAL, { ["x-sluice-data-class"] = "secret-ish" })
    assert.equals(400, res.status)
    assert.equals("data_class_unknown", res.code)
  end)

  it("honours a consumer's list of classes it may raise to", function()
    local c = { id = "a", data_class = "public", raise = { "internal" } }
    assert.equals("ok", call(c, { ["x-sluice-data-class"] = "internal" }).action)
    assert.equals("data_class_not_allowed", call(c, { ["x-sluice-data-class"] = "confidential" }).code)
  end)

  it("records the request's class for the audit record", function()
    local res = call(EU_CONFIDENTIAL)
    local _, audit = t.log(chain(), res.ctx)
    assert.equals("confidential", audit.annotations["data-boundary"].data_class)
    assert.equals("confidential", audit.data_class) -- promoted to the top of the record
  end)

  it("refuses a default_class that is not a class, at load", function()
    local ok, err = t.try_chain({ { name = "data-boundary", config = { default_class = "x" } } })
    assert.is_nil(ok)
    assert.matches("default_class: 'x' is not one of classes", err)
  end)

  it("judges a request outside the catalog by the default backend", function()
    t.plugin_dirs = { "plugins", "spec/fixtures/plugins" }
    local c = t.chain({ { name = "test-consumer" }, { name = "data-boundary" } },
                      { models = MODELS, backends = BACKENDS, default_backend = "openai" })
    local res = t.request(c, { method = "POST", path = "/v1/files",
      headers = { ["x-test-consumer"] = json.encode({ id = "a", data_class = "confidential" }) } })
    assert.equals(403, res.status)
  end)
end)

describe("data-boundary holding against later plugins", function()
  it("keeps a later set_targets, route or fallback from widening the boundary", function()
    t.plugin_dirs = { "plugins", "spec/fixtures/plugins" }
    local c = t.chain({ { name = "test-consumer" }, { name = "data-boundary" },
                        { name = "route-to", path = "spec/fixtures/plugins/route-to.lua",
                          config = { backends = { "openai", "azure-eu" } } } },
                      { models = MODELS, backends = BACKENDS })
    local res = t.request(c, { headers = { ["x-test-consumer"] = json.encode(EU_CONFIDENTIAL) },
                               json = { model = "gpt-4o", messages = {} } })
    assert.equals("ok", res.action)
    assert.same({ "azure-eu" }, res.targets)
  end)

  it("refuses when a later plugin's choice lies wholly outside it", function()
    t.plugin_dirs = { "plugins", "spec/fixtures/plugins" }
    local c = t.chain({ { name = "test-consumer" }, { name = "data-boundary" },
                        { name = "route-to", path = "spec/fixtures/plugins/route-to.lua",
                          config = { backends = { "openai" } } } },
                      { models = MODELS, backends = BACKENDS })
    local res = t.request(c, { headers = { ["x-test-consumer"] = json.encode(EU_CONFIDENTIAL) },
                               json = { model = "gpt-4o", messages = {} } })
    assert.equals("deny", res.action)
    assert.equals(403, res.status)
    assert.equals("data_boundary", res.code)
  end)
end)
