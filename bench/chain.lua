-- bench/chain.lua — where the Lua side of one AI request goes, in µs, for
-- the front door alone and for each plugin of the shipped default chain
-- (policies/default.yaml) added to it, through the real runtime, sandbox
-- and adapters, with no sockets:
--
--   ./build/sluice spec bench/chain.lua
--
-- One request is what the gateway calls per request: access and route
-- (runtime.request), prepare (the OpenAI adapter writes the upstream
-- body), upstream_response, body_filter (the mock's whole answer) and log
-- (the audit fields). The body is bench/chat.lua's. Not a spec: nothing is
-- asserted beyond every request being served.
local t = require "sluice.test"
local runtime = require "sluice.runtime"
local json = require "sluice.json"
local hash = require "sluice.hash"
local socket = require "socket"

local KEY = "sk-bench-0000000000000000"
local PROMPT = ("Summarise the quarterly report for the board. "):rep(16)
local BODY = '{"model":"gpt-4o-mini","temperature":0.2,"max_tokens":256,'
  .. '"user":"bench","messages":['
  .. '{"role":"system","content":"You are a concise assistant for the '
  .. 'finance team. Answer in plain English, no more than five bullet '
  .. 'points, and never include account numbers."},'
  .. '{"role":"user","content":"' .. PROMPT .. '"}]}'
local ANSWER = '{"id":"chatcmpl-mock","object":"chat.completion","created":1795647862,'
  .. '"model":"mock-model","choices":[{"index":0,"message":{"role":"assistant",'
  .. '"content":"Hello from the sluice mock provider."},"finish_reason":"stop"}],'
  .. '"usage":{"prompt_tokens":1,"completion_tokens":7,"total_tokens":8}}'
local HEADERS = { ["content-type"] = "application/json", authorization = "Bearer " .. KEY,
                  host = "127.0.0.1:8080", ["user-agent"] = "wrk" }
local RESP_HEADERS = { "content-type", "application/json", "content-length", tostring(#ANSWER) }

-- policies/default.yaml's catalog and plugins, with the bench key's hash.
local OPTS = {
  models = { ["mock-model"] = { targets = { { backend = "mock", model = "mock-model" } },
                                aliases = { "gpt-4o-mini" } },
             ["mock-small"] = { targets = { { backend = "mock", model = "mock-small" } } } },
  backends = { mock = { provider = "openai", region = "local", data_classes = { "public", "internal" } } },
  default_backend = "mock",
}
local PLUGINS = {
  ["key-auth"] = { consumers = { quickstart = { app = "quickstart", team = "platform",
    owner = "platform-team@example.com", data_class = "internal",
    keys = { { name = "demo", hash = "sha256:" .. hash.sha256(KEY) } } } } },
  catalog = {},
  ["data-boundary"] = {},
  ["request-limits"] = { global = { max_messages = 200, max_prompt_tokens = 100000, max_tokens = 8192 } },
  redact = { mode = "mask" },
}
local ORDER = { "key-auth", "catalog", "data-boundary", "request-limits", "redact" }

local function chain_of(names)
  local items = {}
  for i, n in ipairs(names) do items[i] = { name = n, config = PLUGINS[n] } end
  return t.chain(items, OPTS)
end

local source = { headers = function(h) return h.flat end, body = function(h) return h.body end }
local FLAT = {}
for k, v in pairs(HEADERS) do FLAT[#FLAT + 1] = k; FLAT[#FLAT + 1] = v end

-- One request through every phase; returns the time of each.
local clock = socket.gettime
local function one(chain, acc)
  local t0 = clock()
  local kind, st = runtime.request(chain, { flat = FLAT, body = BODY }, "bench-id", "POST",
                                   "/v1/chat/completions", "", source)
  local t1 = clock()
  if kind ~= "ok" then error("request not served: " .. tostring(kind)) end
  local pk = runtime.prepare(chain, st, 1, "mock")
  local t2 = clock()
  if pk ~= "ok" then error("prepare failed: " .. tostring(pk)) end
  runtime.upstream_response(chain, st, 200, RESP_HEADERS, "mock", 1, false)
  local t3 = clock()
  local out = runtime.body_filter(chain, st, ANSWER, true)
  local t4 = clock()
  if type(out) ~= "string" then error("body_filter failed") end
  runtime.log(chain, st, { status = 200, backend = "mock" })
  local t5 = clock()
  acc[1] = acc[1] + (t1 - t0); acc[2] = acc[2] + (t2 - t1); acc[3] = acc[3] + (t3 - t2)
  acc[4] = acc[4] + (t4 - t3); acc[5] = acc[5] + (t5 - t4)
end

local function measure(chain, rounds)
  local acc = { 0, 0, 0, 0, 0 }
  for _ = 1, 300 do one(chain, acc) end
  collectgarbage()
  acc = { 0, 0, 0, 0, 0 }
  for _ = 1, rounds do one(chain, acc) end
  local total = 0
  for i = 1, 5 do acc[i] = acc[i] / rounds * 1e6; total = total + acc[i] end
  -- what one request leaves for the collector, in bytes
  collectgarbage(); collectgarbage("stop")
  local before = collectgarbage("count")
  for _ = 1, 100 do one(chain, { 0, 0, 0, 0, 0 }) end
  local garbage = (collectgarbage("count") - before) * 1024 / 100
  collectgarbage("restart")
  return acc, total, garbage
end

describe("default chain cost", function()
  it("prints µs per request by phase, front door alone and plugin by plugin", function()
    local rounds = tonumber(os.getenv("ROUNDS") or "") or 20000
    local rows = { ("%-28s %8s %8s %8s %8s %8s %8s %9s"):format(
      "chain", "request", "prepare", "up_resp", "filter", "log", "total", "garbage") }
    local function row(label, names)
      local acc, total, garbage = measure(chain_of(names), rounds)
      rows[#rows + 1] = ("%-28s %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f %8.0fB"):format(
        label, acc[1], acc[2], acc[3], acc[4], acc[5], total, garbage)
    end
    row("front door (catalog only)", {})
    row("+ key-auth", { "key-auth" })
    for i = 2, #ORDER do row("key-auth + " .. ORDER[i], { "key-auth", ORDER[i] }) end
    row("default chain", ORDER)
    print("\n" .. table.concat(rows, "\n"))
  end)
end)
