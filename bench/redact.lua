-- bench/redact.lua — what the redact plugin costs per KB of prompt, in mask
-- mode with every built-in class, through the real runtime and sandbox
-- (access phase only, no sockets):
--
--   ./build/sluice spec bench/redact.lua
--
-- Prompts are realistic prose (a support conversation, code and logs) at
-- several sizes, once clean and once with about one value per 200 bytes.
-- The baseline is the same request through bench/plugins/read-model.lua,
-- which only decodes the body (what any body-reading plugin pays), so the
-- difference is the scan and, with values, the re-encoding. Not a spec: nothing is asserted.
local t = require "sluice.test"
local json = require "sluice.json"
local socket = require "socket"

local PROSE = {
  "Hi team, the customer reported that the export job failed again last night around 02:14 UTC. ",
  "I looked at the worker logs and saw the retry loop kick in three times before giving up. ",
  "Version 4.18.2 of the exporter was deployed on 2024-03-15, and build 20240315.1 is still pinned. ",
  "Could you summarise the thread below and propose the next steps for the on-call engineer? ",
  "def retry(fn, attempts=3):\n    for i in range(attempts):\n        try:\n            return fn()\n",
  "        except TimeoutError as e:\n            log.warning('attempt %d failed: %s', i, e)\n",
  "2024-03-16T02:14:07Z WARN export.worker job=8812 shard=3 elapsed_ms=30012 status=timeout\n",
  "Order #4500012345 was split into two shipments; tracking will follow once the carrier confirms. ",
}

local PII = {
  "Contact jane.roe@example.net or call +1 312 555 0100. ",
  "Card on file 4111 1111 1111 1111, refund to DE89 3704 0044 0532 0130 00. ",
  "Server 10.20.30.40 uses key AKIAZ7QPLK4ZHT5QWEXY. ",
  "SSN 536-90-4399 on the form. ",
}

local function prompt(bytes, with_pii)
  local parts, n, i = {}, 0, 0
  while n < bytes do
    i = i + 1
    local s = PROSE[(i - 1) % #PROSE + 1]
    if with_pii and i % 2 == 0 then s = s .. PII[(i / 2 - 1) % #PII + 1] end
    parts[#parts + 1] = s
    n = n + #s
  end
  return table.concat(parts):sub(1, bytes)
end

local function body(text)
  return json.encode({ model = "m", messages = {
    { role = "system", content = "You are a helpful support assistant." },
    { role = "user", content = text } } })
end

local function time_per_request(chain, raw, rounds)
  for _ = 1, 20 do t.request(chain, { body = raw }) end -- warm caches and the regex JIT
  local t0 = socket.gettime()
  for _ = 1, rounds do t.request(chain, { body = raw }) end
  return (socket.gettime() - t0) / rounds * 1e6
end

describe("redact cost", function()
  it("prints µs per KB of prompt in mask mode", function()
    t.plugin_dirs = { "plugins", "bench/plugins" }
    local redact = t.chain({ { name = "redact", config = {} } })
    local base = t.chain({ { name = "read-model" } })
    local rows = { ("%-8s %-6s %10s %10s %12s %12s %7s"):format(
      "prompt", "pii", "base µs", "redact µs", "base µs/KB", "redact µs/KB", "ratio") }
    for _, size in ipairs({ 1024, 8192, 32768 }) do
      for _, with_pii in ipairs({ false, true }) do
        local raw = body(prompt(size, with_pii))
        local rounds = math.max(50, math.floor(2e6 / size))
        local b = time_per_request(base, raw, rounds)
        local r = time_per_request(redact, raw, rounds)
        local kb = size / 1024
        rows[#rows + 1] = ("%-8s %-6s %10.1f %10.1f %12.1f %12.1f %6.1fx"):format(
          math.floor(kb) .. "KB", with_pii and "yes" or "no", b, r, b / kb, r / kb, r / b)
      end
    end
    print("\n" .. table.concat(rows, "\n"))
  end)
end)
