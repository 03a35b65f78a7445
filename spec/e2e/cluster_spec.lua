-- End-to-end: three sluice instances sharing one real Redis (cluster mode,
-- docs/scale-out.md), against the shipped mock. A team quota driven through
-- all three by 200 concurrent clients stays within the documented bound
-- (limit + I × S − 1, with I instances and S the local share in requests)
-- and Redis holds exactly what was served; a breaker opened on one instance is
-- respected by the others; Redis killed mid-run and restarted empty:
-- requests flow throughout (fail-open limits count locally, fail-closed
-- ones refuse), and afterwards Redis holds every served request once.
--
-- Redis is Debian's redis-server on a loopback port the spec picks, without
-- persistence, so a restart really comes back empty.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"
local loadgen = require "spec.helpers.load"
local json = require "sluice.json"
local socket = require "socket"

local ROOT = io.popen("pwd"):read("*l")
local INSTANCES = 3
local FLUSH_UNITS = 10
-- the local share: twice flush_units increments (each request counts 1)
local SHARE = 2 * FLUSH_UNITS

local BODY = json.encode({ model = "chat-fast", max_tokens = 7,
                           messages = { { role = "user", content = ("q"):rep(40) } } })

-- ---- Redis ----------------------------------------------------------------

local function start_redis(port, dir)
  local r = proc.spawn(("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no "
    .. "--dir %s"):format(port, proc.quote(dir)), dir, "redis-" .. port)
  proc.wait_port(r, port)
  return r
end

-- One command over RESP; returns the decoded reply.
local function redis(port, ...)
  local args = { ... }
  local c = assert(socket.connect("127.0.0.1", port))
  c:settimeout(5)
  local out = { "*" .. #args .. "\r\n" }
  for _, a in ipairs(args) do out[#out + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n" end
  assert(c:send(table.concat(out)))
  local function read()
    local line = assert(c:receive("*l"))
    local t, rest = line:sub(1, 1), line:sub(2)
    if t == "+" or t == ":" then return t == ":" and tonumber(rest) or rest end
    if t == "-" then error("redis: " .. rest) end
    if t == "$" then
      local n = tonumber(rest)
      if n < 0 then return nil end
      local s = assert(c:receive(n + 2))
      return s:sub(1, n)
    end
    local items = {}
    for i = 1, tonumber(rest) do items[i] = read() end
    return items
  end
  local v = read()
  c:close()
  return v
end

-- The sum of the cluster counters whose key contains `part`.
local function redis_count(port, part)
  local total = 0
  for _, k in ipairs(redis(port, "KEYS", "sluice:c:*")) do
    if k:find(part, 1, true) then total = total + tonumber(redis(port, "GET", k) or "0") end
  end
  return total
end

-- ---- gateways ---------------------------------------------------------------

local function cluster_gateways(redis_port, doc, extra)
  local gws = {}
  for i = 1, INSTANCES do
    local dir = proc.tmpdir()
    os.execute("mkdir -p " .. proc.quote(dir .. "/policies"))
    proc.write_file(dir .. "/policies/default.json", json.encode(doc))
    local cluster = { address = "redis://127.0.0.1:" .. redis_port .. "/0",
                      instance = "gw-" .. i, flush_interval = "5ms",
                      flush_units = FLUSH_UNITS, timeout = "500ms" }
    for k, v in pairs(extra or {}) do cluster[k] = v end
    gws[i] = proc.gateway({ dir = dir, config = {
      workers = 2, cluster = cluster,
      plugin_dirs = { ROOT .. "/plugins", ROOT .. "/spec/fixtures/quota" },
      -- 200 connections at once are read and reach the mock slowly under valgrind
      timeouts = { upstream_connect = math.ceil(2 * proc.slow) .. "s",
                   upstream_first_byte = math.ceil(5 * proc.slow) .. "s",
                   header_read = math.ceil(2 * proc.slow) .. "s",
                   body_read = math.ceil(2 * proc.slow) .. "s" },
      log = { access = "off", level = "warn" } } })
  end
  return gws
end

local function quota_policy(mock, limits)
  return {
    backends = { mock = { provider = "openai", url = mock.url } },
    default_backend = "mock",
    models = { ["chat-fast"] = { targets = { { backend = "mock", model = "mock-model" } } } },
    plugins = { { name = "test-consumer" }, { name = "quota", config = { limits = limits } } },
  }
end

local function stop_all(list)
  for _, g in ipairs(list) do g:stop() end
end

-- `n` requests at once from curl --parallel, spread over the gateways in
-- turn; returns a map status → count.
local function burst(gws, n, headers, dir, parallel)
  local ports = {}
  for i, gw in ipairs(gws) do ports[i] = gw.port end
  return loadgen.burst(ports, n, headers, BODY, dir, parallel)
end

local function settle_in_window(period, margin)
  local left = period - proc.now() % period
  if left < margin then proc.sleep(left + 0.05) end
end

local function eventually(what, f, timeout)
  local deadline = proc.now() + (timeout or 3)
  local last
  while proc.now() < deadline do
    last = f()
    if last then return last end
    proc.sleep(0.05)
  end
  error("not within " .. (timeout or 3) .. "s: " .. what)
end

describe("cluster settings", function()
  teardown(function() proc.stop_all() end)

  local function check(cluster)
    local dir = proc.tmpdir()
    os.execute("mkdir -p " .. proc.quote(dir .. "/policies"))
    proc.write_file(dir .. "/policies/p.yaml", proc.yaml(proc.policy("http://127.0.0.1:9")))
    local cfg = proc.default_config(proc.free_port())
    cfg.cluster = cluster
    proc.write_file(dir .. "/sluice.yaml", proc.yaml(cfg))
    return proc.sluice({ "check", "-c", dir .. "/sluice.yaml" })
  end

  it("refuses rediss://, credentials in the address and an inline password", function()
    local st, out = check({ address = "rediss://redis.internal:6380/0" })
    assert.is_not.equals(0, st)
    assert.matches("cluster.address: rediss:// is not supported", out)
    st, out = check({ address = "redis://:pw@redis.internal:6379/0" })
    assert.is_not.equals(0, st)
    assert.matches("no credentials in the address", out)
    assert.is_nil(out:find("pw@", 1, true))
    st, out = check({ address = "redis://redis.internal", password = "hunter2" })
    assert.is_not.equals(0, st)
    assert.matches("cluster.password: given by reference", out)
    assert.is_nil(out:find("hunter2", 1, true))
  end)

  it("accepts a complete section", function()
    local st, out = check({ address = "redis://127.0.0.1:6379/2", password = "env:HOME",
                            instance = "gw-1", flush_interval = "5ms", flush_units = 50,
                            fail = "closed" })
    assert.equals(0, st, out)
  end)
end)

describe("cluster mode: three instances, one Redis", function()
  local redis_port, redis_proc, redis_dir, mock

  setup(function()
    redis_port = proc.free_port()
    redis_dir = proc.tmpdir()
    redis_proc = start_redis(redis_port, redis_dir)
    mock = proc.mock()
  end)
  teardown(function() proc.stop_all() end)

  it("keeps a team quota driven through all three by 200 clients within limit + I×S − 1", function()
    local limit = 120
    local gws = cluster_gateways(redis_port, quota_policy(mock, { { by = "team", requests = limit } }))
    settle_in_window(60, 15)
    local before = http.mock_stats(mock.port).requests
    local codes = burst(gws, 200, { ["x-test-team"] = "cluster-burst" }, gws[1].dir)
    local served = codes[200] or 0
    assert.equals(200, served + (codes[429] or 0), json.encode(codes))
    local bound = limit + INSTANCES * SHARE - 1
    assert.is_true(served <= bound, ("served %d, bound %d"):format(served, bound))
    -- admission is cluster-wide: far fewer than the three limits in-process
    -- instances would serve
    assert.is_true(served < INSTANCES * limit, "served " .. served)
    -- the mock saw exactly those, and Redis counted each exactly once
    assert.equals(before + served + 1, http.mock_stats(mock.port).requests)
    eventually("Redis holds the served count", function()
      return redis_count(redis_port, "cluster-burst") == served
    end)
    -- then one client at a time, in turn on each instance, until every
    -- instance refuses: an idle instance learns the total from its next
    -- flush, so the team gets its whole limit and the bound still holds
    local refusing, tries = {}, 0
    while #refusing < INSTANCES do
      tries = tries + 1
      assert.is_true(tries <= bound + 10 * INSTANCES, "instances never all refused")
      local i = (tries - 1) % INSTANCES + 1
      local res = assert(http.request(gws[i].port, { method = "POST", path = "/v1/chat/completions",
        headers = { ["content-type"] = "application/json", ["x-test-team"] = "cluster-burst" },
        body = BODY }))
      if res.status == 200 then
        served = served + 1
        refusing = {}
      else
        assert.equals(429, res.status, res.body)
        refusing[#refusing + 1] = i
      end
      proc.sleep(0.01)
    end
    assert.is_true(served >= limit, "served only " .. served)
    assert.is_true(served <= bound, ("served %d, bound %d"):format(served, bound))
    eventually("Redis holds the served count", function()
      return redis_count(redis_port, "cluster-burst") == served
    end)
    stop_all(gws)
  end)

  it("respects on every instance a breaker another instance opened", function()
    local primary = proc.mock({ status = 503 })
    local secondary = proc.mock()
    local doc = {
      backends = { primary = { provider = "openai", url = primary.url, region = "local" },
                   secondary = { provider = "openai", url = secondary.url, region = "local" } },
      default_backend = "primary",
      models = { chat = { targets = { { backend = "primary", model = "mock-model" },
                                      { backend = "secondary", model = "mock-model" } } } },
      plugins = { { name = "fallback", config = {
        breaker = { consecutive_failures = 2, cool_down = "30s" } } } },
    }
    local gws = cluster_gateways(redis_port, doc)
    local function chat(gw)
      local res = assert(http.request(gw.port, { method = "POST", path = "/v1/chat/completions",
        headers = { ["content-type"] = "application/json" },
        body = json.encode({ model = "chat", messages = { { role = "user", content = "hi" } } }) }))
      assert.equals(200, res.status, res.body)
      return res.headers["x-sluice-backend"]
    end
    local function calls(m)
      return json.decode(assert(http.request(m.port, { path = "/mock/requests" })).body).total
    end
    -- two failures on the first instance open the breaker there
    for _ = 1, 2 do assert.equals("secondary", chat(gws[1])) end
    assert.equals(2, calls(primary))
    -- within a second the two others skip the primary without calling it
    proc.sleep(1)
    for i = 2, INSTANCES do
      for _ = 1, 3 do assert.equals("secondary", chat(gws[i])) end
    end
    assert.equals(2, calls(primary))
    stop_all(gws)
    primary:stop(); secondary:stop()
  end)

  it("keeps requests flowing while Redis is down and counts each once when it is back", function()
    -- (the local share counts requests admitted before a flush comes back;
    -- a burst beyond it is told to retry in a second, by design and as
    -- another case shows: here the share is larger than any burst, so that
    -- no answer depends on how fast flushes come back)
    local gws = cluster_gateways(redis_port, quota_policy(mock, {
      { by = "team", requests = 100000, period = "hour", cluster_share = 1000 },
      { by = "app", requests = 100000, period = "hour", cluster_fail = "closed", cluster_share = 1000 },
    }), { flush_units = FLUSH_UNITS * proc.slow })
    local open = { ["x-test-team"] = "outage-open" }
    local closed = { ["x-test-team"] = "outage-closed", ["x-test-app"] = "strict" }
    local dir = gws[1].dir
    settle_in_window(3600, 30)
    local served = 0
    local codes = burst(gws, 90, open, dir, 20)
    assert.equals(90, codes[200], json.encode(codes))
    served = served + 90
    assert.equals(30, burst(gws, 30, closed, dir, 10)[200])
    -- Redis dies: fail-open limits count locally, fail-closed ones refuse
    proc.signal(redis_proc, "KILL")
    proc.wait(redis_proc, 5)
    -- (in the moment before an instance notices, a burst beyond its share
    -- waits on a flush that never returns and gets 429 + Retry-After: 1)
    eventually("every instance noticed", function()
      for _, gw in ipairs(gws) do
        if not gw:log():find("cluster: Redis at 127.0.0.1:%d+ unreachable") then return false end
      end
      return true
    end)
    codes = burst(gws, 90, open, dir, 20)
    assert.equals(90, codes[200], json.encode(codes))
    served = served + 90
    local refused = burst(gws, 30, closed, dir, 10)
    assert.equals(30, refused[503])
    -- Redis comes back empty on the same port
    redis_proc = start_redis(redis_port, redis_dir)
    eventually("every instance reconnected and wrote its counts back", function()
      return redis_count(redis_port, "outage-open") == served
    end, 10)
    codes = burst(gws, 90, open, dir, 20)
    assert.equals(90, codes[200], json.encode(codes))
    served = served + 90
    assert.equals(30, burst(gws, 30, closed, dir, 10)[200])
    eventually("Redis holds every served request once", function()
      return redis_count(redis_port, "outage-open") == served
        and redis_count(redis_port, "strict") == 60
    end)
    proc.sleep(0.3) -- nothing more arrives later: no count is sent twice
    assert.equals(served, redis_count(redis_port, "outage-open"))
    stop_all(gws)
  end)
end)
