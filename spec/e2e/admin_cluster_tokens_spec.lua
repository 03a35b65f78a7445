-- End-to-end: admin tokens added or revoked through the API in cluster mode
-- hold on every instance sharing the Redis: added on one, honoured by the
-- others; revoked on one, refused by all; an instance started later knows
-- them; with Redis down a token change is refused rather than made on one
-- instance only. Real Redis, real binaries.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"
local json = require "sluice.json"
local hash = require "sluice.hash"

local ROOT = "tok-root-3e8a55c1"

local function start_redis(port, dir)
  local r = proc.spawn(("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no "
    .. "--dir %s"):format(port, proc.quote(dir)), dir, "redis-" .. port)
  proc.wait_port(r, port)
  return r
end

local function instance(redis_port, n, mock)
  local aport = proc.free_port()
  local g = proc.gateway({
    policy = { backends = { a = { provider = "openai", url = mock.url, region = "local" } },
               default_backend = "a" },
    config = function(_, dir)
      return {
        workers = 1,
        log = { level = "info" },
        cluster = { address = "redis://127.0.0.1:" .. redis_port .. "/0", instance = "gw-" .. n,
                    timeout = "500ms" },
        admin = { listen = "127.0.0.1:" .. aport, state_dir = dir .. "/state", max_failures = 1000, tokens = {
          { name = "root", sha256 = hash.sha256(ROOT), roles = { "admin" } } } },
      }
    end,
  })
  proc.wait_port(g.proc, aport)
  g.aport = aport
  return g
end

local function call(g, method, path, token, body)
  local res = assert(http.request(g.aport, { method = method, path = path, timeout = 20,
    headers = { authorization = "Bearer " .. token },
    body = type(body) == "table" and json.encode(body) or (method ~= "GET" and "" or nil) }))
  return res, res.body ~= "" and json.decode(res.body) or nil
end

local function eventually(what, f, timeout)
  local deadline = proc.now() + (timeout or 5) * proc.slow
  while proc.now() < deadline do
    if f() then return end
    proc.sleep(0.05)
  end
  error("not within " .. (timeout or 5) .. "s: " .. what)
end

local function ready(g)
  eventually("the instance reaches Redis", function()
    local res, st = call(g, "GET", "/admin/status", ROOT)
    return res.status == 200 and st.cluster and st.cluster.redis
  end)
end

describe("admin tokens in cluster mode", function()
  local redis, redis_port, mock, g1, g2

  setup(function()
    redis_port = proc.free_port()
    redis = start_redis(redis_port, proc.tmpdir())
    mock = proc.mock()
    g1 = instance(redis_port, 1, mock)
    g2 = instance(redis_port, 2, mock)
    ready(g1)
    ready(g2)
  end)

  teardown(function() proc.stop_all() end)

  it("honours a token added on one instance on the others, and a revocation on all", function()
    local res, j = call(g1, "POST", "/admin/tokens", ROOT, { name = "shared", roles = { "read" } })
    assert.are.equal(201, res.status, res.body)
    local secret = j.secret
    assert.are.equal(200, (call(g1, "GET", "/admin/status", secret)).status)
    eventually("gw-2 honours the token", function()
      return call(g2, "GET", "/admin/status", secret).status == 200
    end)
    local _, st = call(g2, "GET", "/admin/status", secret)
    assert.are.equal("shared", st.you)
    -- a third instance started now knows it too
    local g3 = instance(redis_port, 3, mock)
    ready(g3)
    eventually("gw-3 honours the token", function()
      return call(g3, "GET", "/admin/status", secret).status == 200
    end)
    -- revoked on gw-2: refused everywhere
    res = call(g2, "DELETE", "/admin/tokens/shared", ROOT)
    assert.are.equal(200, res.status, res.body)
    assert.are.equal(401, (call(g2, "GET", "/admin/status", secret)).status)
    for _, g in ipairs({ g1, g3 }) do
      eventually("the revocation reaches every instance", function()
        return call(g, "GET", "/admin/status", secret).status == 401
      end)
    end
    -- gw-1's audit log has its add; gw-2's the revocation; neither the token
    local a1 = proc.read_file(g1.dir .. "/state/admin-audit.log")
    local a2 = proc.read_file(g2.dir .. "/state/admin-audit.log")
    assert.is_truthy(a1:find('"action":"token_add","result":"ok"', 1, true), a1)
    assert.is_truthy(a2:find('"action":"token_revoke","result":"ok"', 1, true), a2)
    assert.is_falsy((a1 .. a2):find(secret, 1, true))
    proc.stop(g3.proc)
  end)

  it("refuses a token change while Redis is down", function()
    proc.stop(redis)
    eventually("gw-1 notices Redis is gone", function()
      local _, st = call(g1, "GET", "/admin/status", ROOT)
      return st and st.cluster and not st.cluster.redis
    end)
    local res, j = call(g1, "POST", "/admin/tokens", ROOT, { name = "lonely", roles = { "read" } })
    assert.are.equal(503, res.status, res.body)
    assert.are.equal("cluster_unavailable", j.error.code)
    local _, list = call(g1, "GET", "/admin/tokens", ROOT)
    for _, t in ipairs(list.tokens) do assert.are_not.equal("lonely", t.name) end
  end)
end)
