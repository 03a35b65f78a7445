-- Load for e2e specs: many requests at once from one curl --parallel.
local proc = require "spec.helpers.proc"

local M = {}

-- `n` POSTs of `body` to /v1/chat/completions at once (at most `parallel`
-- in flight, all n by default) from curl --parallel, spread over `ports`
-- (a list) in turn, each with `headers`; curl's config and the body go in
-- `dir`. Returns a map status → count (asserting n answers came back).
function M.burst(ports, n, headers, body, dir, parallel)
  local body_file = proc.write_file(dir .. "/body.json", body)
  local lines = {}
  for i = 1, n do
    lines[#lines + 1] = ('url = "http://127.0.0.1:%d/v1/chat/completions"'):format(ports[(i - 1) % #ports + 1])
    lines[#lines + 1] = 'header = "content-type: application/json"'
    for k, v in pairs(headers) do lines[#lines + 1] = ('header = "%s: %s"'):format(k, v) end
    lines[#lines + 1] = 'data-binary = "@' .. body_file .. '"'
    lines[#lines + 1] = 'output = "/dev/null"'
    lines[#lines + 1] = 'write-out = "%{http_code}\\n"'
    if i < n then lines[#lines + 1] = "next" end
  end
  local cfg = proc.write_file(dir .. "/burst.curl", table.concat(lines, "\n") .. "\n")
  local status, out = proc.run("curl -s --max-time 60 --parallel --parallel-immediate "
    .. "--parallel-max " .. (parallel or n) .. " -K " .. proc.quote(cfg))
  assert(status == 0, "curl --parallel exited " .. tostring(status) .. ":\n" .. out)
  local codes, total = {}, 0
  for code in out:gmatch("(%d%d%d)\n") do
    codes[tonumber(code)] = (codes[tonumber(code)] or 0) + 1
    total = total + 1
  end
  assert(total == n, ("%d answers of %d:\n%s"):format(total, n, out))
  return codes
end

return M
