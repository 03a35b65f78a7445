-- new_plugin_spec.lua — `sluice new-plugin NAME` gives a platform team a
-- plugin and a spec that pass as generated, a plugin a real gateway loads,
-- and never overwrites work.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"

-- Run a sluice command inside `dir`: status, output.
local function sluice_in(dir, args)
  return proc.run("cd " .. proc.quote(dir) .. " && timeout -k 2 "
    .. math.floor(30 * proc.slow) .. " " .. proc.sluice_cmd(args))
end

describe("sluice new-plugin", function()
  local tmp

  setup(function()
    tmp = proc.tmpdir()
  end)

  teardown(function()
    proc.stop_all()
  end)

  it("creates a plugin and its spec where --dir and --spec-dir say", function()
    local status, out = sluice_in(tmp, { "new-plugin", "team-tag",
      "--dir", tmp .. "/plugins", "--spec-dir", tmp .. "/spec" })
    assert.equals(0, status, out)
    assert.truthy(out:find("created " .. tmp .. "/plugins/team-tag.lua", 1, true), out)
    assert.truthy(out:find("created " .. tmp .. "/spec/team_tag_spec.lua", 1, true), out)
    local src = assert(proc.read_file(tmp .. "/plugins/team-tag.lua"))
    assert.truthy(src:find('name = "team-tag"', 1, true))
    assert.truthy(proc.read_file(tmp .. "/spec/team_tag_spec.lua"))
  end)

  it("generates a spec that passes as generated, run from the project folder", function()
    -- sluice.test looks for plugins in ./plugins: run where plugins/ is
    local status, out = sluice_in(tmp, { "spec", "spec/team_tag_spec.lua" })
    assert.equals(0, status, out)
    assert.truthy(out:find("2 successes / 0 failures / 0 errors", 1, true), out)
  end)

  it("generates a plugin a real gateway loads and runs", function()
    local mock = proc.mock()
    local gw = proc.gateway({
      backend_url = mock.url,
      config = { plugin_dirs = { tmp .. "/plugins" } },
      policy = {
        backends = { mock = { provider = "openai", url = mock.url } },
        plugins = { { name = "team-tag", config = { value = "on" } } },
      },
    })
    local res = assert(http.request(gw.port, { path = "/mock/echo" }))
    assert.equals(200, res.status, res.body)
    assert.same({ "on" }, (http.echo_headers(res))["x-team-tag"])
  end)

  it("refuses to overwrite an existing plugin", function()
    local before = proc.read_file(tmp .. "/plugins/team-tag.lua")
    local status, out = sluice_in(tmp, { "new-plugin", "team-tag",
      "--dir", tmp .. "/plugins", "--spec-dir", tmp .. "/spec" })
    assert.equals(1, status, out)
    assert.truthy(out:find("team-tag.lua already exists", 1, true), out)
    assert.equals(before, proc.read_file(tmp .. "/plugins/team-tag.lua"))
  end)

  it("refuses a name that is not a plugin name", function()
    local status, out = sluice_in(tmp, { "new-plugin", "Team Tag",
      "--dir", tmp .. "/plugins", "--spec-dir", tmp .. "/spec" })
    assert.equals(1, status, out)
    assert.truthy(out:find("plugin names use a-z, 0-9, '-' and '_'", 1, true), out)
  end)
end)
