-- quickstart_spec.lua — the README's quickstart stays exactly true: the
-- shipped sluice.yaml and default policy start (ports moved to free ones),
-- and every curl command of the Quickstart section answers what the
-- comment under it shows (each "…"-separated fragment, in order).
local proc = require "spec.helpers.proc"
local readme = require "spec.helpers.readme"

describe("the README quickstart", function()
  local gw_port, mock_port

  setup(function()
    gw_port, mock_port = proc.free_port(), proc.free_port()
    local cfg = assert(proc.read_file("sluice.yaml"))
    cfg = cfg:gsub("127%.0%.0%.1:8080", "127.0.0.1:" .. gw_port)
             :gsub("127%.0%.0%.1:8081", "127.0.0.1:" .. mock_port)
    local dir = proc.tmpdir()
    os.execute("cp -r policies " .. proc.quote(dir) .. "/")
    local pol = assert(proc.read_file(dir .. "/policies/default.yaml"))
    proc.write_file(dir .. "/policies/default.yaml", (pol:gsub("127%.0%.0%.1:8081", "127.0.0.1:" .. mock_port)))
    cfg = cfg:gsub("policy_dir: policies", "policy_dir: " .. dir .. "/policies")
    proc.write_file(dir .. "/sluice.yaml", cfg)
    local g = proc.spawn(proc.sluice_cmd({ "run", "-c", dir .. "/sluice.yaml" }), dir, "quickstart")
    proc.wait_port(g, gw_port)
    proc.wait_port(g, mock_port)
  end)

  teardown(function() proc.stop_all() end)

  local cmds = readme.commands(assert(proc.read_file("README.md")), "## Quickstart")

  it("has the commands it promises", function()
    assert.is_true(#cmds >= 5)
  end)

  for i, c in ipairs(cmds) do
    it("answers command " .. i .. " as shown: " .. c.cmd:match("^[^\n]*"), function()
      readme.check(c, { ["127.0.0.1:8080"] = "127.0.0.1:" .. gw_port })
    end)
  end
end)
