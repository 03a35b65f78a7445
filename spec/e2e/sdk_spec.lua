-- End-to-end with the official client SDKs (npm `openai`, `@anthropic-ai/sdk`),
-- as applications call sluice: one stable contract whichever provider
-- serves the model. Every catalog model below is served by a different
-- adapter (OpenAI, Azure, Anthropic, Gemini) on the mock provider, which
-- here requires each provider's own credential: they come from policy, by
-- reference, never from the client.
local proc = require "spec.helpers.proc"
local json = require "sluice.json"

local SDK_DIR = "spec/sdk"
local KEY = "sk-provider-key-from-policy"

local ensure_sdks = proc.ensure_sdks

local function drive(sdk, base, model, scenario)
  local status, out = proc.run(("cd %s && timeout 60 node drive.mjs %s %s %s %s"):format(
    SDK_DIR, sdk, base, model, scenario))
  assert(status == 0, out)
  local line = out:match("({.*})%s*$")
  local res = assert(json.decode(line or ""), "no JSON from the SDK driver:\n" .. out)
  assert(res.ok, ("%s %s %s failed: %s"):format(sdk, model, scenario, tostring(res.error)))
  return res
end

local CHAT = { "m-openai", "m-azure", "m-anthropic", "m-gemini" }
local HELLO = "Hello from the sluice mock provider."

describe("client SDKs through sluice", function()
  local mock, base

  setup(function()
    ensure_sdks()
    mock = proc.mock()
    os.execute("true")
    local g = { port = proc.free_port(), dir = proc.tmpdir() }
    os.execute("mkdir -p " .. proc.quote(g.dir .. "/policies"))
    proc.write_file(g.dir .. "/sluice.yaml", proc.yaml(proc.default_config(g.port)))
    proc.write_file(g.dir .. "/policies/default.yaml", ([[
backends:
  oa: { provider: openai, url: "%s", credentials: "env:SPEC_PROVIDER_KEY" }
  az: { provider: azure, url: "%s", credentials: "env:SPEC_PROVIDER_KEY", api_version: "2024-06-01" }
  an: { provider: anthropic, url: "%s", credentials: "env:SPEC_PROVIDER_KEY" }
  ge: { provider: gemini, url: "%s", credentials: "env:SPEC_PROVIDER_KEY" }
models:
  m-openai: { targets: [ { backend: oa, model: gpt-4o-mini } ] }
  m-azure: { targets: [ { backend: az, model: chat-deployment } ] }
  m-anthropic: { targets: [ { backend: an, model: claude-3-5-haiku } ] }
  m-gemini: { targets: [ { backend: ge, model: gemini-2.0-flash } ] }
  e-openai: { targets: [ { backend: oa, model: text-embedding-3-small } ] }
  e-azure: { targets: [ { backend: az, model: embed-deployment } ] }
  e-gemini: { targets: [ { backend: ge, model: text-embedding-004 } ] }
]]):format(mock.url, mock.url, mock.url, mock.url))
    local cmd = "env SPEC_PROVIDER_KEY=" .. KEY .. " " ..
      proc.sluice_cmd({ "run", "-c", g.dir .. "/sluice.yaml" })
    g.proc = proc.spawn(cmd, g.dir, "sluice-" .. g.port)
    proc.wait_port(g.proc, g.port)
    base = "http://127.0.0.1:" .. g.port
  end)

  teardown(function() proc.stop_all() end)

  it("lists the catalog with the OpenAI SDK", function()
    local r = drive("openai", base, "-", "models")
    table.sort(r.ids)
    assert.are.same({ "e-azure", "e-gemini", "e-openai", "m-anthropic", "m-azure", "m-gemini", "m-openai" }, r.ids)
  end)

  for _, model in ipairs(CHAT) do
    it("gets the same chat completion from " .. model .. " with the OpenAI SDK", function()
      local r = drive("openai", base, model, "chat")
      assert.are.equal(model, r.model)
      assert.are.equal(HELLO, r.content)
      assert.are.equal("stop", r.finish)
      assert.is_true(r.usage.prompt_tokens > 0)
      assert.is_true(r.usage.completion_tokens > 0)
    end)

    it("streams the same answer from " .. model .. " with the OpenAI SDK", function()
      local r = drive("openai", base, model, "stream")
      assert.are.same({ model }, r.models)
      assert.are.equal(HELLO, r.content)
      assert.are.equal("stop", r.finish)
      assert.is_truthy(r.usage, "include_usage gave no usage chunk")
      assert.is_true(r.usage.completion_tokens > 0)
    end)

    it("gets the same tool call from " .. model .. " with the OpenAI SDK", function()
      local r = drive("openai", base, model, "tools")
      assert.are.equal("tool_calls", r.finish)
      assert.are.equal("get_weather", r.name)
      assert.are.same({ location = "Paris" }, r.arguments)
    end)

    it("answers the Anthropic SDK on /v1/messages from " .. model, function()
      local r = drive("anthropic", base, model, "chat")
      assert.are.equal(HELLO, r.content)
      assert.are.equal("end_turn", r.stop)
      assert.is_true(r.usage.output_tokens > 0)
    end)

    it("gets a tool_use from " .. model .. " with the Anthropic SDK", function()
      local r = drive("anthropic", base, model, "tools")
      assert.are.equal("tool_use", r.stop)
      assert.are.equal("get_weather", r.name)
      assert.are.same({ location = "Paris" }, r.input)
    end)

    it("streams to the Anthropic SDK from " .. model, function()
      local r = drive("anthropic", base, model, "stream")
      assert.are.equal(HELLO, r.content)
      assert.are.equal("end_turn", r.stop)
      assert.are.equal("message_start", r.events[1])
      assert.are.equal("message_stop", r.events[#r.events])
    end)
  end

  for _, model in ipairs({ "e-openai", "e-azure", "e-gemini" }) do
    it("embeds with " .. model .. " through the OpenAI SDK", function()
      local r = drive("openai", base, model, "embeddings")
      assert.are.equal(2, r.count)
      assert.are.equal(8, r.dims)
    end)
  end
end)
