-- End-to-end: policy plugins in the real binary. Fixture plugins from
-- spec/fixtures/plugins (copied to a temporary plugin_dirs entry, so a
-- spec can edit them) change what reaches the backend, deny with their own
-- status and the OpenAI error shape, are stopped by the time budget without
-- taking the worker down, are checked by `sluice check`, and are reloaded
-- from disk on SIGHUP (a broken edit is refused and the old code serves).
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"

local REPO = os.getenv("SLUICE_HOME")
  or (io.open("spec/fixtures/plugins/deny.lua") and ".")
  or "/work/main"
local FIXTURES = REPO .. "/spec/fixtures/plugins"

-- A fresh plugin directory holding copies of the fixtures.
local function plugin_dir()
  local d = proc.tmpdir() .. "/plugins"
  os.execute("mkdir -p " .. proc.quote(d) .. " && cp " .. proc.quote(FIXTURES) .. "/*.lua "
    .. proc.quote(d) .. "/")
  return d
end

local function policy(mock_url, plugins)
  local p = proc.policy(mock_url)
  p.plugins = plugins
  return p
end

local function config(pdir, budget)
  return { plugin_dirs = { pdir }, lua = { time_budget = budget or "100ms" } }
end

local function echo_header(port, name, headers)
  local res = assert(http.request(port, { path = "/mock/echo", headers = headers or {} }))
  assert.are.equal(200, res.status, res.body)
  local map = http.echo_headers(res)
  return map[name] and map[name][1]
end

describe("sluice with policy plugins", function()
  local mock

  setup(function()
    mock = proc.mock()
  end)

  teardown(function()
    proc.stop_all()
  end)

  describe("a running policy", function()
    local gw, pdir

    setup(function()
      pdir = plugin_dir()
      -- written by hand: proc.yaml would emit the string "7" as a number
      gw = proc.gateway({
        config = config(pdir),
        policy = table.concat({
          "backends:",
          "  mock: { provider: openai, url: '" .. mock.url .. "', region: local }",
          "default_backend: mock",
          "plugins:",
          "  - name: add-header",
          "    config: { header: x-team, value: platform }",
          "  - name: deny",
          "    config:",
          "      status: 429",
          "      code: rate_limited",
          "      message: slow down",
          "      when_header: x-deny",
          "      headers: { Retry-After: '7' }",
          "  - name: spin",
          "",
        }, "\n"),
      })
    end)

    teardown(function()
      if gw then gw:stop() end
    end)

    it("sends the header a plugin added to the backend", function()
      assert.are.equal("platform", echo_header(gw.port, "x-team"))
    end)

    it("answers a deny with the plugin's status, headers and an OpenAI error", function()
      local res = assert(http.chat(gw.port, { ["x-deny"] = "1" }))
      assert.are.equal(429, res.status, res.body)
      assert.are.equal("7", res.headers["retry-after"])
      assert.matches("^application/json", res.headers["content-type"])
      local err = assert(http.error_of(res), res.body)
      assert.are.equal("slow down", err.message)
      assert.are.equal("rate_limited", err.code)
      assert.are.equal("rate_limit_error", err.type)
      assert.is_truthy(res.headers["x-request-id"])
    end)

    it("stops a plugin looping forever with a 500 plugin_error within the budget, "
      .. "and the same worker serves the next request", function()
      local t0 = proc.now()
      local res = assert(http.chat(gw.port, { ["x-spin"] = "1" }, nil, { timeout = 5 }))
      local dt = proc.now() - t0
      assert.are.equal(500, res.status, res.body)
      local err = assert(http.error_of(res), res.body)
      assert.are.equal("plugin_error", err.code)
      assert.are.equal("server_error", err.type)
      assert.matches("spin", err.message, 1, true)
      assert.is_true(dt < 1 * proc.slow, ("answered after %.3fs with a 100 ms budget"):format(dt))
      -- workers: 1 — the next request runs in the very Lua state that looped
      local ok = assert(http.chat(gw.port))
      assert.are.equal(200, ok.status, ok.body)
      assert.are.equal("chatcmpl-mock", http.json(ok.body).id)
      assert.is_true(proc.alive(gw.proc))
    end)

    it("keeps serving after several runaway requests in a row", function()
      for _ = 1, 3 do
        local res = assert(http.chat(gw.port, { ["x-spin"] = "1" }, nil, { timeout = 5 }))
        assert.are.equal(500, res.status)
      end
      assert.are.equal(200, assert(http.chat(gw.port)).status)
    end)
  end)

  describe("sluice check", function()
    local function check_policy(plugins)
      local dir = proc.tmpdir()
      local pdir = plugin_dir()
      os.execute("mkdir -p " .. proc.quote(dir .. "/policies"))
      local cfg = proc.merge(proc.default_config(proc.free_port()), config(pdir))
      local cfg_path = proc.write_file(dir .. "/sluice.yaml", proc.yaml(cfg))
      local pol_path = dir .. "/policies/default.yaml"
      proc.write_file(pol_path, type(plugins) == "string" and plugins
        or proc.yaml(policy(mock.url, plugins)))
      local st, out = proc.sluice({ "check", "-c", cfg_path })
      return st, out, pol_path
    end

    it("accepts a policy with valid plugin configs", function()
      local st, out = check_policy({
        { name = "add-header", config = { header = "x-team", value = "platform" } },
        { name = "spin" },
      })
      assert.are.equal(0, st, out)
    end)

    it("names file, line and key of a bad plugin config, and exits 2", function()
      local text = table.concat({
        "backends:",
        "  mock:",
        "    provider: openai",
        "    url: " .. mock.url,
        "    region: local",
        "default_backend: mock",
        "plugins:",
        "  - name: add-header",
        "    config:",
        "      header: x-team",
        "      value: platform",
        "  - name: deny",
        "    config:",
        "      status: 4.5",
        "",
      }, "\n")
      local st, out, path = check_policy(text)
      assert.are.equal(2, st, out)
      assert.is_truthy(out:find(path .. ":14: plugins[2].config.status: expected a whole number", 1, true), out)
    end)

    it("names a missing required key and an unknown key", function()
      local st, out, path = check_policy(table.concat({
        "backends:",
        "  mock: { provider: openai, url: '" .. mock.url .. "', region: local }",
        "default_backend: mock",
        "plugins:",
        "  - name: add-header",
        "    config:",
        "      header: x-team",
        "",
      }, "\n"))
      assert.are.equal(2, st, out)
      assert.is_truthy(out:find(path .. ":%d+: plugins%[1%]%.config%.value: is required"), out)

      st, out, path = check_policy(table.concat({
        "backends:",
        "  mock: { provider: openai, url: '" .. mock.url .. "', region: local }",
        "default_backend: mock",
        "plugins:",
        "  - name: spin",
        "  - name: add-header",
        "    config:",
        "      header: x-team",
        "      value: v",
        "      colour: red",
        "",
      }, "\n"))
      assert.are.equal(2, st, out)
      assert.is_truthy(out:find(path .. ":10: plugins[2].config.colour: unknown field", 1, true), out)
    end)
  end)

  describe("on SIGHUP", function()
    local gw, pdir

    local function add_header_source(value, extra)
      return ([[
local p = { name = "add-header", priority = 10 }
p.schema = { header = { type = "string", required = true }, value = { type = "string", required = true } }
function p.access(ctx, conf)
  ctx.request:set_header(conf.header, %q)
end
%s
return p
]]):format(value, extra or "")
    end

    local function wait_header(value, timeout)
      local deadline = proc.now() + (timeout or 3) * proc.slow
      local got
      repeat
        got = echo_header(gw.port, "x-team")
        if got == value then return got end
        proc.sleep(0.05)
      until proc.now() > deadline
      return got
    end

    setup(function()
      pdir = plugin_dir()
      gw = proc.gateway({
        config = config(pdir),
        policy = policy(mock.url, {
          { name = "add-header", config = { header = "x-team", value = "platform" } },
        }),
      })
    end)

    teardown(function()
      if gw then gw:stop() end
    end)

    it("loads a plugin's edited code without a restart", function()
      assert.are.equal("platform", echo_header(gw.port, "x-team"))
      local pid = gw.proc.pid
      proc.write_file(pdir .. "/add-header.lua", add_header_source("edited-v2"))
      gw:signal("HUP")
      assert.are.equal("edited-v2", wait_header("edited-v2"))
      assert.are.equal(pid, gw.proc.pid)
      assert.is_true(proc.alive(gw.proc))
    end)

    it("refuses a broken edit (syntax error) and keeps serving the old code", function()
      proc.write_file(pdir .. "/add-header.lua", add_header_source("edited-v3"))
      gw:signal("HUP")
      assert.are.equal("edited-v3", wait_header("edited-v3"))

      proc.write_file(pdir .. "/add-header.lua", "local p = {\nfunction p.access( end\nreturn p\n")
      gw:signal("HUP")
      local deadline = proc.now() + 3 * proc.slow
      while proc.now() < deadline and not gw:log():find("reload refused", 1, true) do
        proc.sleep(0.05)
      end
      assert.is_truthy(gw:log():find("reload refused", 1, true), gw:log())
      assert.is_truthy(gw:log():find("add-header.lua:2", 1, true), gw:log())
      for _ = 1, 5 do
        assert.are.equal("edited-v3", echo_header(gw.port, "x-team"))
      end
      assert.are.equal(200, assert(http.chat(gw.port)).status)
    end)

    it("refuses an edit whose load loops forever, within the budget, and keeps serving", function()
      proc.write_file(pdir .. "/add-header.lua", add_header_source("edited-v4"))
      gw:signal("HUP")
      assert.are.equal("edited-v4", wait_header("edited-v4"))
      proc.write_file(pdir .. "/add-header.lua", "while true do end\nreturn {}\n")
      local before = select(2, gw:log():gsub("reload refused", ""))
      gw:signal("HUP")
      local deadline = proc.now() + 3 * proc.slow
      while proc.now() < deadline and select(2, gw:log():gsub("reload refused", "")) == before do
        proc.sleep(0.05)
      end
      assert.is_true(select(2, gw:log():gsub("reload refused", "")) > before, gw:log())
      assert.is_truthy(gw:log():find("time budget", 1, true), gw:log())
      assert.are.equal("edited-v4", echo_header(gw.port, "x-team"))
    end)
  end)
end)

describe("a plugin that keeps ctx.request past its request", function()
  teardown(function() proc.stop_all() end)

  it("gets an error, not the memory of a finished request", function()
    local mock = proc.mock()
    local gw = proc.gateway({
      config = { plugin_dirs = { io.popen("pwd"):read("*l") .. "/spec/fixtures/plugins" } },
      policy = table.concat({
        "backends:",
        "  mock: { provider: openai, url: '" .. mock.url .. "' }",
        "plugins:",
        "  - name: stash",
        "",
      }, "\n"),
    })
    local first = assert(http.chat(gw.port))
    assert.are.equal(200, first.status)
    -- a new connection: the first one's memory is gone
    local second = assert(http.chat(gw.port))
    assert.are.equal(500, second.status)
    assert.are.equal("plugin_error", http.error_of(second).code)
    assert.matches("this request is over", gw:log(), 1, true)
    local third = assert(http.chat(gw.port))
    assert.are.equal(500, third.status) -- and the worker is still serving
  end)
end)
