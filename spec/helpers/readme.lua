-- readme.lua — keep a README's shell examples true: the curl commands of a
-- section, each with the output shown in the "# " comment lines under it.
local proc = require "spec.helpers.proc"

local M = {}

-- The curl commands (with their continuation lines) in the ```sh blocks of
-- `text` between the headings `from` and the next one: { cmd, expect }.
function M.commands(text, heading)
  local section = assert(text:match("\n" .. heading:gsub("%p", "%%%0") .. "\n(.-)\n## ")
    or text:match("\n" .. heading:gsub("%p", "%%%0") .. "\n(.*)$"), "no section " .. heading)
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
      elseif line == "" then
        cur = nil -- a comment after a blank line introduces the next command
      end
    end
  end
  return cmds
end

-- Each fragment between "…" must appear, in order, in the output.
function M.matches(out, expect)
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

-- Run command c with `from` → `to` port rewrites; raise unless it answers
-- what the README shows.
function M.check(c, rewrites)
  assert(#c.expect > 0, "no expected output shown under: " .. c.cmd)
  local cmd = c.cmd
  for from, to in pairs(rewrites) do cmd = cmd:gsub(from:gsub("%p", "%%%0"), to) end
  local status, out = proc.run(cmd)
  assert(status == 0, out)
  local ok, missing = M.matches(out, c.expect)
  assert(ok, ("%s\nmissing %q in:\n%s"):format(c.cmd, tostring(missing), out))
end

return M
