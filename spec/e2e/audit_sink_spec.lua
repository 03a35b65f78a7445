-- End-to-end: the audit log's delivery. The real binary in front of the
-- shipped mock writes one record per request to its access log file and
-- POSTs batches of them (newline-delimited JSON) to a collector. The
-- collector here is a small HTTP server inside this spec (luasocket): it
-- answers only while the spec serves it, and "killing" it closes its
-- listening socket, so the gateway meets refused connections exactly as
-- with a dead process. A log file that cannot be written is /dev/full
-- (ENOSPC on every write, for root too) and a log directory replaced by a
-- plain file at rotation (no file can be created below it, for root too).
-- No request may fail for any of it, and no key, token or redacted value
-- may appear in a record or a log line.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"
local json = require "sluice.json"
local socket = require "socket"

local GW_KEY = "sk-gw-audit-e2e-5c1f9a"
local PROVIDER_KEY = "sk-provider-audit-e2e-77b2"
local AUDIT_TOKEN = "Bearer audit-collector-token-3e8d41"
local EMAIL = "jane.roe.audit@example.com"
local SECRETS = { GW_KEY, PROVIDER_KEY, AUDIT_TOKEN, "audit-collector-token", EMAIL }

local hash_of = proc.hash_key

local function policy(mock_url)
  return ([[
backends:
  mock: { provider: openai, url: "%s", region: local, credentials: "env:SPEC_PROVIDER_KEY" }
default_backend: mock
models:
  mock-model: { targets: [ { backend: mock, model: mock-model } ] }
plugins:
  - name: key-auth
    config:
      consumers:
        audit-app:
          team: audit-team
          keys: [ { hash: "%s", name: current } ]
  - name: redact
    config: { mode: mask }
]]):format(mock_url, hash_of(GW_KEY))
end

-- ---- the collector -------------------------------------------------------------

local Collector = {}
Collector.__index = Collector

local function collector(port)
  return setmetatable({ port = port, posts = {} }, Collector)
end

function Collector:start()
  self.srv = assert(socket.bind("127.0.0.1", self.port))
  self.srv:settimeout(0)
end

function Collector:kill()
  self.srv:close()
  self.srv = nil
end

-- One POST: request line, headers (lowercase names), body by content-length.
function Collector:handle(conn)
  conn:settimeout(5)
  local line = conn:receive("*l")
  local headers = {}
  while true do
    local l = conn:receive("*l")
    if not l or l == "" then break end
    local k, v = l:match("^([^:]+):%s*(.*)$")
    if k then headers[k:lower()] = v end
  end
  local n = tonumber(headers["content-length"] or "0") or 0
  local body = n > 0 and conn:receive(n) or ""
  self.posts[#self.posts + 1] = { line = line, headers = headers, body = body or "" }
  conn:send("HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
  conn:close()
end

-- Answer what arrives until done() holds or `timeout` seconds pass.
function Collector:serve_until(done, timeout)
  local deadline = proc.now() + (timeout or 10)
  while not done() and proc.now() < deadline do
    local r = socket.select({ self.srv }, nil, 0.1)
    if #r > 0 then
      local conn = self.srv:accept()
      if conn then self:handle(conn) end
    end
  end
  return done()
end

-- Every record received so far, by request id.
function Collector:records()
  local by_id, n = {}, 0
  for _, p in ipairs(self.posts) do
    for line in p.body:gmatch("[^\n]+") do
      local rec = json.decode(line)
      by_id[rec.request_id] = rec
      n = n + 1
    end
  end
  return by_id, n
end

-- ---- helpers ---------------------------------------------------------------------

local function chat(port, id, content)
  local body = json.encode({ model = "mock-model",
    messages = { { role = "user", content = content or "hi" } } })
  return assert(http.request(port, { method = "POST", path = "/v1/chat/completions",
    headers = { ["content-type"] = "application/json", authorization = "Bearer " .. GW_KEY,
                ["x-request-id"] = id },
    body = body }))
end

-- Send n requests with ids prefix-1..n; every one must be served.
local function traffic(port, prefix, n)
  for i = 1, n do
    local res = chat(port, prefix .. "-" .. i)
    assert.are.equal(200, res.status, res.body)
  end
end

local function wait_for(pred, timeout)
  local deadline = proc.now() + (timeout or 10)
  while not pred() and proc.now() < deadline do proc.sleep(0.05) end
  return pred()
end

local function count(text, piece)
  local n, from = 0, 1
  while true do
    local s, e = text:find(piece, from, true)
    if not s then return n end
    n, from = n + 1, e + 1
  end
end

local function assert_no_secret(text, where)
  for _, s in ipairs(SECRETS) do
    assert.is_nil(text:find(s, 1, true), "a secret appears in " .. where .. ": " .. s)
  end
end

-- Start a gateway whose log section is `log`, with the provider key and the
-- collector token in its environment.
local function gateway(mock, log)
  local port, dir = proc.free_port(), proc.tmpdir()
  os.execute("mkdir -p " .. proc.quote(dir .. "/policies"))
  local cfg = proc.merge(proc.default_config(port), { log = log(dir) })
  proc.write_file(dir .. "/sluice.yaml", proc.yaml(cfg))
  proc.write_file(dir .. "/policies/default.yaml", policy(mock.url))
  local cmd = "env SPEC_PROVIDER_KEY=" .. PROVIDER_KEY .. " SPEC_AUDIT_TOKEN="
    .. proc.quote(AUDIT_TOKEN) .. " " .. proc.sluice_cmd({ "run", "-c", dir .. "/sluice.yaml" })
  local g = { port = port, dir = dir, proc = proc.spawn(cmd, dir, "sluice-" .. port) }
  proc.wait_port(g.proc, port)
  function g:log() return proc.log(self.proc) end
  return g
end

describe("the audit log's delivery", function()
  local mock

  setup(function() mock = proc.mock() end)
  teardown(function() proc.stop_all() end)

  describe("to a collector and a file", function()
    local col, gw, access_log

    setup(function()
      col = collector(proc.free_port())
      gw = gateway(mock, function(dir)
        access_log = dir .. "/access.log"
        return { access = access_log, level = "info", audit_queue = "64KiB",
          audit_http = { url = "http://127.0.0.1:" .. col.port .. "/ingest?stream=gw",
            batch = "4KiB", flush = "200ms", timeout = "3s",
            headers = { authorization = "env:SPEC_AUDIT_TOKEN" } } }
      end)
      -- only now: a process started later would inherit the listening
      -- socket (luasocket sets no close-on-exec) and keep it alive
      col:start()
    end)

    teardown(function() if col.srv then col:kill() end end)

    it("posts every record as newline-delimited JSON in batches, with the configured header", function()
      traffic(gw.port, "batch", 30)
      local function have_all()
        local by_id = col:records()
        for i = 1, 30 do if not by_id["batch-" .. i] then return false end end
        return true
      end
      assert.is_true(col:serve_until(have_all, 10), "not every record reached the collector")
      local _, nrec = col:records()
      assert.are.equal(30, nrec)
      assert.is_true(#col.posts < 30, "records were not batched: " .. #col.posts .. " posts")
      local multi = 0
      for _, p in ipairs(col.posts) do
        assert.are.equal("POST /ingest?stream=gw HTTP/1.1", p.line)
        assert.are.equal("application/x-ndjson", p.headers["content-type"])
        assert.are.equal(AUDIT_TOKEN, p.headers["authorization"])
        local lines = count(p.body, "\n")
        assert.are.equal("\n", p.body:sub(-1))
        if lines > 1 then
          multi = multi + 1
          assert.is_true(#p.body <= 4096, "a batch of " .. lines .. " records passed 4KiB")
        end
      end
      assert.is_true(multi > 0, "no POST carried more than one record")
      local rec = col:records()["batch-7"]
      assert.are.equal(200, rec.status)
      assert.are.equal("/v1/chat/completions", rec.path)
      -- the file sink has them too
      assert.is_true(wait_for(function()
        return (proc.read_file(access_log) or ""):find('"request_id":"batch-30"', 1, true) ~= nil
      end, 5))
    end)

    it("fails no request while the collector is dead, reports failure and drops, and resumes", function()
      col:kill()
      -- 64KiB of queue holds only part of what is sent while it is down
      -- (records are near 800 bytes)
      traffic(gw.port, "down", 200)
      assert.is_true(wait_for(function()
        return gw:log():find("posting to collector http://127.0.0.1:" .. col.port
          .. "/ingest failed", 1, true) ~= nil
      end, 10), gw:log())
      assert.is_true(wait_for(function()
        return gw:log():find("http sink queue full", 1, true) ~= nil
      end, 10), gw:log())
      -- one line when it starts failing, not one per record or per retry
      assert.are.equal(1, count(gw:log(), "posting to collector"))

      col:start()
      -- the queue drains first (the retry comes after a backoff)...
      assert.is_true(col:serve_until(function()
        return gw:log():find("accepts records again", 1, true) ~= nil
      end, 15), gw:log())
      -- ...then new records flow again
      traffic(gw.port, "back", 5)
      local function have_back()
        local by_id = col:records()
        for i = 1, 5 do if not by_id["back-" .. i] then return false end end
        return true
      end
      assert.is_true(col:serve_until(have_back, 15), "delivery did not resume")
      -- what waited in the queue during the outage arrived as well
      local by_id = col:records()
      local kept = 0
      for i = 1, 200 do if by_id["down-" .. i] then kept = kept + 1 end end
      assert.is_true(kept > 0 and kept < 200, "kept " .. kept .. " of 200")
      local dropped = gw:log():match("accepts records again; (%d+) records were dropped")
      assert.is_truthy(dropped, gw:log())
      assert.are.equal(200 - kept, tonumber(dropped))
      -- and the file sink lost nothing
      local text = proc.read_file(access_log)
      for i = 1, 200 do
        assert.is_truthy(text:find('"request_id":"down-' .. i .. '"', 1, true), "down-" .. i)
      end
    end)

    it("records no key, token or redacted value, in the collector, the file or the error log", function()
      local res = chat(gw.port, "pii-1", "write to " .. EMAIL .. " please")
      assert.are.equal(200, res.status, res.body)
      assert.is_true(col:serve_until(function() return col:records()["pii-1"] ~= nil end, 10))
      local rec = col:records()["pii-1"]
      assert.is_truthy(json.encode(rec):find("EMAIL", 1, true), json.encode(rec))
      local bodies = {}
      for _, p in ipairs(col.posts) do bodies[#bodies + 1] = p.body end
      assert_no_secret(table.concat(bodies), "the collector's records")
      assert.is_true(wait_for(function()
        return (proc.read_file(access_log) or ""):find('"request_id":"pii-1"', 1, true) ~= nil
      end, 5))
      assert_no_secret(proc.read_file(access_log), "the access log")
      assert_no_secret(gw:log(), "the error log")
    end)

    it("reopens the access log on SIGUSR1", function()
      assert.are.equal(0, os.rename(access_log, access_log .. ".1") and 0 or 1)
      traffic(gw.port, "before-rotation", 1)
      assert.is_true(wait_for(function()
        return (proc.read_file(access_log .. ".1") or ""):find('"before-rotation-1"', 1, true) ~= nil
      end, 5), "the record did not reach the renamed file")
      proc.signal(gw.proc, "USR1")
      assert.is_true(wait_for(function() return proc.read_file(access_log) ~= nil end, 5),
        "no new access log after SIGUSR1")
      traffic(gw.port, "after-rotation", 1)
      assert.is_true(wait_for(function()
        return (proc.read_file(access_log) or ""):find('"after-rotation-1"', 1, true) ~= nil
      end, 5))
      assert.is_truthy(proc.read_file(access_log .. ".1"):find('"before-rotation-1"', 1, true))
      assert.is_nil(proc.read_file(access_log .. ".1"):find('"after-rotation-1"', 1, true))
    end)
  end)

  it("fails no request when every write of the log file fails, and reports it once", function()
    local gw = gateway(mock, function() return { access = "/dev/full", level = "info" } end)
    for round = 1, 3 do
      traffic(gw.port, "full-" .. round, 10)
      proc.sleep(0.3) -- each round is its own flush, its own failed write
    end
    assert.is_true(wait_for(function()
      return gw:log():find("writing to /dev/full failed: No space left on device", 1, true) ~= nil
    end, 5), gw:log())
    assert.are.equal(1, count(gw:log(), "writing to /dev/full failed"))
    assert.is_truthy(proc.alive(gw.proc))
    proc.stop(gw.proc)
  end)

  it("fails no request when the log directory cannot be written at rotation, and keeps the old file", function()
    local logdir
    local gw = gateway(mock, function(dir)
      logdir = dir .. "/logs"
      os.execute("mkdir -p " .. proc.quote(logdir))
      return { access = logdir .. "/access.log", level = "info" }
    end)
    traffic(gw.port, "rot-before", 3)
    -- the directory goes away and a plain file takes its name: nothing,
    -- root included, can create logs/access.log now
    assert.is_truthy(os.rename(logdir, logdir .. ".old"))
    proc.write_file(logdir, "not a directory\n")
    proc.signal(gw.proc, "USR1")
    assert.is_true(wait_for(function()
      return gw:log():find("log reopen: " .. logdir .. "/access.log: cannot open log", 1, true) ~= nil
    end, 5), gw:log())
    traffic(gw.port, "rot-after", 5)
    assert.is_true(wait_for(function()
      return (proc.read_file(logdir .. ".old/access.log") or ""):find('"rot-after-5"', 1, true) ~= nil
    end, 5), "records did not go on to the file already open")
    proc.stop(gw.proc)
  end)

  describe("configuration", function()
    local function config_with(log)
      local dir = proc.tmpdir()
      local cfg = proc.merge(proc.default_config(proc.free_port()), { log = log })
      cfg.policy_dir = nil
      return proc.write_file(dir .. "/sluice.yaml", proc.yaml(cfg))
    end

    it("refuses a collector header given inline, naming file, line and key", function()
      local path = config_with({ audit_http = { url = "http://127.0.0.1:9/x",
        headers = { authorization = "Bearer inline-secret-value" } } })
      local st, out = proc.sluice({ "check", "-c", path })
      assert.are.equal(2, st, out)
      assert.is_truthy(out:find("sluice.yaml:%d+: log.audit_http.headers.authorization: header "
        .. "values are given by reference"), out)
      assert.is_nil(out:find("inline-secret-value", 1, true))
    end)

    it("refuses a collector in clear text beyond this host", function()
      local path = config_with({ audit_http = { url = "http://collector.example:8080/ingest" } })
      local st, out = proc.sluice({ "check", "-c", path })
      assert.are.equal(2, st, out)
      assert.is_truthy(out:find("log.audit_http.url: collector.example is not a loopback address", 1, true), out)
    end)

    it("refuses an unknown key and a bad size under log", function()
      local st, out = proc.sluice({ "check", "-c", config_with({ audit_http = {
        url = "https://collector.example/ingest", retries = 3 } }) })
      assert.are.equal(2, st, out)
      assert.is_truthy(out:find("log.audit_http.retries: unknown key", 1, true), out)
      st, out = proc.sluice({ "check", "-c", config_with({ audit_queue = "lots" }) })
      assert.are.equal(2, st, out)
      assert.is_truthy(out:find("log.audit_queue: expected a size", 1, true), out)
    end)

    it("does not start when a header's secret cannot be read, and names it without its value", function()
      local path = config_with({ audit_http = { url = "http://127.0.0.1:9/x",
        headers = { authorization = "env:SPEC_AUDIT_UNSET_VAR" } } })
      local st, out = proc.sluice({ "run", "-c", path })
      assert.are.equal(2, st, out)
      assert.is_truthy(out:find("log.audit_http.headers.authorization: env:SPEC_AUDIT_UNSET_VAR: "
        .. "variable not set", 1, true), out)
    end)
  end)
end)
