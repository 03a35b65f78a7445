-- quickstart_spec.lua — the README's quickstart stays exactly true: the
-- shipped sluice.yaml and default policy start (ports moved to free ones),
-- and every curl command of the Quickstart section answers what the
-- comment under it shows (each "…"-separated fragment, in order).
local proc = require "spec.helpers.proc"

local function quickstart_commands(readme)
  local section = assert(readme:match("\n## Quickstart\n(.-)\n## "), "no Quickstart section")
  local cmds = {}
  for block in section:gmatch("```sh\n(.-)```") do
    local cur
    for line in block:gmatch("([^\n]*)\n") do
      if line:match("^curl ") then
        cur = { cmd = line, expect = {} }
        cmds[#cmds + 1] = cur
      elseif cur and line:match("^  ") and cur.cmd:match("\\$") then
        cur.cmd = cur.cmd .. "\n" .. line
      elseif cur and line:match("^# ") then
        cur.expect[#cur.expect + 1] = line:sub(3)
      end
    end
  end
  return cmds
end

-- Each fragment between "…" must appear, in order, in the output.
local function matches_in_order(out, expect)
  local at = 1
  for _, line in ipairs(expect) do
    for frag in (line .. "…"):gmatch("(.-)…") do
      if frag ~= "" then
        local i, j = out:find(frag, at, true)
        if not i then return false, frag end
        at = j + 1
      end
    end
  end
  return true
end

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

  local cmds = quickstart_commands(assert(proc.read_file("README.md")))

  it("has the commands it promises", function()
    assert.is_true(#cmds >= 5)
  end)

  for i, c in ipairs(cmds) do
    it("answers command " .. i .. " as shown: " .. c.cmd:match("^[^\n]*"), function()
      assert.is_true(#c.expect > 0, "no expected output shown under the command")
      local cmd = c.cmd:gsub("127%.0%.0%.1:8080", "127.0.0.1:" .. gw_port)
      local status, out = proc.run(cmd)
      assert.equals(0, status, out)
      local ok, missing = matches_in_order(out, c.expect)
      assert(ok, ("missing %q in:\n%s"):format(tostring(missing), out))
    end)
  end
end)
