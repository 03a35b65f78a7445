-- End-to-end: backends get their credentials from policy, by reference,
-- and only those travel upstream — in the provider's own header. The
-- client's credentials never do, and no secret reaches a log.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"

local SECRET = "sk-spec-3f9a1c7e0b2d4e6f"

-- A gateway whose policy is `policy_text` (backends at the mock), with an
-- access log and secret_dirs pointing at its own folder. env: extra
-- environment for the process (how env: references are tested).
local function gateway(policy_text, env)
  local g = { port = proc.free_port(), dir = proc.tmpdir() }
  os.execute("mkdir -p " .. proc.quote(g.dir .. "/policies"))
  proc.write_file(g.dir .. "/secret", SECRET .. "\n")
  local cfg = proc.default_config(g.port)
  cfg.log = { access = g.dir .. "/access.log", error = g.dir .. "/error.log", level = "debug" }
  cfg.secret_dirs = { g.dir }
  proc.write_file(g.dir .. "/sluice.yaml", proc.yaml(cfg))
  proc.write_file(g.dir .. "/policies/default.yaml", policy_text:gsub("DIR", g.dir))
  local cmd = proc.sluice_cmd({ "run", "-c", g.dir .. "/sluice.yaml" })
  if env then cmd = "env " .. env .. " " .. cmd end
  g.proc = proc.spawn(cmd, g.dir, "sluice-" .. g.port)
  proc.wait_port(g.proc, g.port)
  return g
end

local function echo(port, headers)
  return assert(http.request(port, { method = "POST", path = "/mock/echo",
    headers = headers, body = "{}" }))
end

describe("backend credentials", function()
  local mock

  setup(function() mock = proc.mock() end)
  teardown(function() proc.stop_all() end)

  it("sends a file: credential as the OpenAI bearer token, not the client's", function()
    local g = gateway(([[
backends:
  mock: { provider: openai, url: "%s", credentials: "file:DIR/secret" }
]]):format(mock.url))
    local res = echo(g.port, { authorization = "Bearer client-app-key", ["x-api-key"] = "k2" })
    assert.are.equal(200, res.status)
    local h = http.echo_headers(res)
    assert.are.same({ "Bearer " .. SECRET }, h["authorization"])
    assert.is_nil(h["x-api-key"])
    proc.stop(g.proc)
    -- nothing secret in either log
    for _, f in ipairs({ "/access.log", "/error.log" }) do
      local text = proc.read_file(g.dir .. f) or ""
      assert.is_nil(text:find(SECRET, 1, true), f .. " holds the backend secret")
      assert.is_nil(text:find("client-app-key", 1, true), f .. " holds the client's key")
    end
  end)

  it("sends an env: credential in each provider's own header", function()
    local expect = { azure = "api-key", anthropic = "x-api-key",
                     gemini = "x-goog-api-key", openai_compat = "authorization" }
    for provider, header in pairs(expect) do
      local g = gateway(([[
backends:
  b: { provider: %s, url: "%s", credentials: "env:SLUICE_SPEC_KEY" }
]]):format(provider, mock.url), "SLUICE_SPEC_KEY=" .. SECRET)
      local h = http.echo_headers(echo(g.port, { ["api-key"] = "client", ["x-goog-api-key"] = "client" }))
      local want = header == "authorization" and "Bearer " .. SECRET or SECRET
      assert.are.same({ want }, h[header], provider)
      for _, other in pairs(expect) do
        if other ~= header then assert.is_nil(h[other], provider .. " also sent " .. other) end
      end
      proc.stop(g.proc)
    end
  end)

  it("refuses a secret written inline, naming file, line and key", function()
    local dir = proc.tmpdir()
    os.execute("mkdir -p " .. proc.quote(dir .. "/policies"))
    proc.write_file(dir .. "/sluice.yaml", proc.yaml(proc.default_config(proc.free_port())))
    proc.write_file(dir .. "/policies/default.yaml", ([[
backends:
  mock:
    url: "%s"
    credentials: sk-live-123
]]):format(mock.url))
    local status, out = proc.sluice({ "check", "-c", dir .. "/sluice.yaml" })
    assert.are.equal(2, status)
    assert.matches("default.yaml:4: backends.mock.credentials: secrets are given by reference", out, 1, true)
    assert.is_nil(out:find("sk-live-123", 1, true))
  end)

  it("refuses to start when a referenced secret is missing, but check passes", function()
    local dir = proc.tmpdir()
    os.execute("mkdir -p " .. proc.quote(dir .. "/policies"))
    proc.write_file(dir .. "/sluice.yaml", proc.yaml(proc.default_config(proc.free_port())))
    proc.write_file(dir .. "/policies/default.yaml", ([[
backends:
  mock: { url: "%s", credentials: "env:SLUICE_SPEC_UNSET_VARIABLE" }
]]):format(mock.url))
    local status, out = proc.sluice({ "run", "-c", dir .. "/sluice.yaml" })
    assert.are.equal(2, status)
    assert.matches("backends.mock.credentials: env:SLUICE_SPEC_UNSET_VARIABLE: variable not set", out, 1, true)
    status = proc.sluice({ "check", "-c", dir .. "/sluice.yaml" })
    assert.are.equal(0, status)
  end)

  it("refuses a file: credential outside secret_dirs", function()
    local dir = proc.tmpdir()
    os.execute("mkdir -p " .. proc.quote(dir .. "/policies"))
    proc.write_file(dir .. "/sluice.yaml", proc.yaml(proc.default_config(proc.free_port())))
    proc.write_file(dir .. "/policies/default.yaml", ([[
backends:
  mock: { url: "%s", credentials: "file:/etc/hostname" }
]]):format(mock.url))
    local status, out = proc.sluice({ "run", "-c", dir .. "/sluice.yaml" })
    assert.are.equal(2, status)
    assert.matches("file:/etc/hostname: not in an allowed secret directory", out, 1, true)
  end)

  it("refuses an unknown provider", function()
    local dir = proc.tmpdir()
    os.execute("mkdir -p " .. proc.quote(dir .. "/policies"))
    proc.write_file(dir .. "/sluice.yaml", proc.yaml(proc.default_config(proc.free_port())))
    proc.write_file(dir .. "/policies/default.yaml", ([[
backends:
  mock: { provider: openia, url: "%s" }
]]):format(mock.url))
    local status, out = proc.sluice({ "check", "-c", dir .. "/sluice.yaml" })
    assert.are.equal(2, status)
    assert.matches("provider 'openia' is not one of openai, azure, anthropic, gemini, openai_compat", out, 1, true)
  end)
end)
