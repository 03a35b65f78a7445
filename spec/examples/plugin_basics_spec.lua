-- plugin_basics_spec.lua — examples/plugin-basics stays true: its real
-- sluice.yaml and policy start a gateway that adds the owner header on the
-- way to the provider and refuses what deny-field forbids, answering exactly
-- as the README shows; and the example's own plugin specs pass (ctest globs
-- only spec/, so they run from here).
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"

local EXAMPLE = "examples/plugin-basics"

local function repo_root()
  local p = io.popen("pwd")
  local dir = p:read("*l")
  p:close()
  return dir
end

-- Replace `from` (a plain string) exactly once in `text`.
local function replace_once(text, from, to, what)
  local i, j = text:find(from, 1, true)
  assert(i, what .. ": '" .. from .. "' not found")
  assert(not text:find(from, j + 1, true), what .. ": '" .. from .. "' found twice")
  return text:sub(1, i - 1) .. to .. text:sub(j + 1)
end

-- Run a spec file in this spec's environment (describe, it, assert…).
local function run_spec_file(path)
  local chunk = assert(loadfile(path))
  setfenv(chunk, getfenv(1))
  chunk()
end

describe("examples/plugin-basics", function()
  local root = repo_root()
  local readme = assert(proc.read_file(EXAMPLE .. "/README.md"))

  it("passes sluice check as shipped", function()
    local status, out = proc.sluice({ "check", "-c", EXAMPLE .. "/sluice.yaml" })
    assert.equals(0, status, out)
    assert.matches("policy " .. EXAMPLE:gsub("%-", "%%-") .. "/policies: ok", out)
    assert.matches("%(1 backend, 2 plugins%)", out)
  end)

  describe("running its own sluice.yaml and policy", function()
    local gw, mock_port

    setup(function()
      local port = proc.free_port()
      mock_port = proc.free_port()
      local cfg = assert(proc.read_file(EXAMPLE .. "/sluice.yaml"))
      cfg = replace_once(cfg, "127.0.0.1:8090", "127.0.0.1:" .. port, "sluice.yaml")
      cfg = replace_once(cfg, "127.0.0.1:8091", "127.0.0.1:" .. mock_port, "sluice.yaml")
      cfg = replace_once(cfg, "plugin_dirs: [plugins]",
        "plugin_dirs: [" .. root .. "/" .. EXAMPLE .. "/plugins]", "sluice.yaml")
      cfg = replace_once(cfg, "access: stdout", "access: off", "sluice.yaml")
      -- the policy names the mock's port, so it runs from a copy too
      local pol = assert(proc.read_file(EXAMPLE .. "/policies/policy.yaml"))
      pol = replace_once(pol, "http://127.0.0.1:8091", "http://127.0.0.1:" .. mock_port,
        "policy.yaml")
      gw = proc.gateway({ port = port, config_text = cfg, policy = pol })
      proc.wait_port(gw.proc, mock_port)
    end)

    teardown(function()
      proc.stop_all()
    end)

    local function echo(headers, body)
      local res = assert(http.request(gw.port, { path = "/mock/echo",
        headers = headers, body = body, method = body and "POST" or "GET" }))
      assert.equals(200, res.status, res.body)
      return (http.echo_headers(res))
    end

    local function chat(json_body)
      return assert(http.request(gw.port, { method = "POST",
        path = "/v1/chat/completions",
        headers = { ["content-type"] = "application/json" }, body = json_body }))
    end

    it("adds x-team: platform-tools to what reaches the provider", function()
      local h = echo()
      assert.same({ "platform-tools" }, h["x-team"])
    end)

    it("replaces the x-team a client sends instead of adding to it", function()
      local h = echo({ ["x-team"] = "someone-else" })
      assert.same({ "platform-tools" }, h["x-team"])
      h = echo({ ["x-team"] = "someone-else", ["content-type"] = "application/json" },
        '{"model":"mock-model","user":"alice"}')
      assert.same({ "platform-tools" }, h["x-team"])
      assert.same({ "application/json" }, h["content-type"])
    end)

    it("lets an allowed chat completion through", function()
      local res = chat('{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}')
      assert.equals(200, res.status)
      assert.equals("mock", res.headers["x-sluice-backend"])
      local j = assert(http.json(res.body))
      assert.equals("Hello from the sluice mock provider.", j.choices[1].message.content)
    end)

    it("refuses a retired model with 403 and the README's answer, before the provider", function()
      local before = http.mock_stats(mock_port).requests
      local res = chat('{"model":"text-davinci-003","messages":[{"role":"user","content":"hi"}]}')
      assert.equals(403, res.status)
      assert.equals("application/json", res.headers["content-type"])
      local e = assert(http.error_of(res))
      assert.equals("field_value_denied", e.code)
      assert.equals("invalid_request_error", e.type)
      assert.equals("the value of 'model' is not allowed by policy: "
        .. "this model is retired; use mock-model", e.message)
      assert.truthy(readme:find(res.body:gsub("%s+$", ""), 1, true),
        "README shows another answer than\n" .. res.body)
      -- one request for the stats call itself, none for the refused one
      assert.equals(before + 1, http.mock_stats(mock_port).requests)
    end)

    it("refuses a test account by pattern without repeating the user id", function()
      local res = chat('{"model":"mock-model","user":"QA-alice@example.com",'
        .. '"messages":[{"role":"user","content":"hi"}]}')
      assert.equals(403, res.status)
      local e = assert(http.error_of(res))
      assert.equals("test_account_denied", e.code)
      assert.is_nil(res.body:find("alice", 1, true))
      assert.truthy(readme:find(res.body:gsub("%s+$", ""), 1, true),
        "README shows another answer than\n" .. res.body)
    end)

    it("lets a user that does not match the pattern through", function()
      local res = chat('{"model":"mock-model","user":"alice-test",'
        .. '"messages":[{"role":"user","content":"hi"}]}')
      assert.equals(200, res.status)
    end)
  end)

  describe("plugin specs", function()
    run_spec_file(EXAMPLE .. "/spec/add_header_spec.lua")
    run_spec_file(EXAMPLE .. "/spec/deny_field_spec.lua")
  end)
end)
