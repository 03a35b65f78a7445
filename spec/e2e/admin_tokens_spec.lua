-- End-to-end: admin tokens managed through the API, and backend health in
-- GET /admin/status. An `admin` token holder adds a token (its hash, or
-- sluice makes one and shows it once) and revokes one; either holds at once,
-- survives a restart, and is in the admin audit log by name only. Tokens of
-- sluice.yaml are listed but cannot be revoked or shadowed, and the last
-- admin token cannot be revoked. Status reports each backend's requests,
-- upstream errors, last error and breaker as the workers counted them.
-- Real binary, real sockets, a temporary state directory per gateway.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"
local json = require "sluice.json"
local hash = require "sluice.hash"

local ROLES = { reader = { "read" }, proposer = { "propose" }, approver = { "approve" },
                root = { "admin" } }

local function token_of(name) return "tok-" .. name .. "-9c41d7e2b0" end

local function admin_gateway(opts)
  local aport = proc.free_port()
  local g = proc.gateway({
    policy = opts.policy, dir = opts.dir,
    config = function(_, dir)
      local toks = {}
      for _, name in ipairs(opts.config_tokens or { "approver", "proposer", "reader", "root" }) do
        toks[#toks + 1] = { name = name, sha256 = hash.sha256(token_of(name)), roles = ROLES[name] }
      end
      return { workers = 2, log = { level = "info" },
               admin = { listen = "127.0.0.1:" .. aport, state_dir = dir .. "/state",
                         tokens = toks, max_failures = 1000 } }
    end,
  })
  proc.wait_port(g.proc, aport)
  g.aport = aport
  return g
end

local function restart(g, opts)
  proc.stop(g.proc)
  opts.dir = g.dir
  return admin_gateway(opts)
end

local function call(g, method, path, who, body)
  local headers = {}
  if who then headers.authorization = "Bearer " .. (ROLES[who] and token_of(who) or who) end
  if type(body) == "table" then body = json.encode(body) end
  if method ~= "GET" and body == nil then body = "" end
  local res = assert(http.request(g.aport, { method = method, path = path, headers = headers,
    body = body, timeout = 20 }))
  local j = res.body and res.body ~= "" and json.decode(res.body) or nil
  return res, j
end

local function listed(g)
  local res, j = call(g, "GET", "/admin/tokens", "reader")
  assert.are.equal(200, res.status, res.body)
  local out = {}
  for _, t in ipairs(j.tokens) do out[t.name] = t end
  return out, res.body
end

local function audit_text(g) return proc.read_file(g.dir .. "/state/admin-audit.log") or "" end

local function last_audit(g, action)
  local found
  for line in audit_text(g):gmatch("[^\n]+") do
    local e = json.decode(line)
    if e.action == action then found = e end
  end
  return found
end

local function one_backend(mock)
  return { backends = { a = { provider = "openai", url = mock.url, region = "local" } },
           default_backend = "a" }
end

describe("admin tokens through the API", function()
  local mock

  setup(function() mock = proc.mock() end)
  teardown(function() proc.stop_all() end)

  describe("one gateway", function()
    local g
    setup(function() g = admin_gateway({ policy = one_backend(mock) }) end)
    teardown(function() proc.stop(g.proc) end)

    it("lists the tokens of sluice.yaml with their roles and never a hash", function()
      local toks, body = listed(g)
      assert.are.same({ "admin" }, toks.root.roles)
      assert.are.equal("config", toks.root.source)
      assert.are.same({ "read" }, toks.reader.roles)
      assert.is_nil(toks.root.sha256)
      assert.is_falsy(body:find(hash.sha256(token_of("root")), 1, true))
    end)

    it("adds a token by its hash that works at once with exactly its roles", function()
      local secret = "ci-bot-token-71c0d9"
      local res, j = call(g, "POST", "/admin/tokens", "root",
        { name = "ci-bot", roles = { "read", "propose" }, sha256 = hash.sha256(secret) })
      assert.are.equal(201, res.status, res.body)
      assert.are.equal("ci-bot", j.token.name)
      assert.are.equal("api", j.token.source)
      assert.are.equal("root", j.token.created_by)
      assert.is_nil(j.secret)
      res, j = call(g, "GET", "/admin/status", secret)
      assert.are.equal(200, res.status, res.body)
      assert.are.equal("ci-bot", j.you)
      res = call(g, "POST", "/admin/rollback", secret, {})
      assert.are.equal(403, res.status)
      local toks = listed(g)
      assert.are.same({ "read", "propose" }, toks["ci-bot"].roles)
      assert.are.equal("api", toks["ci-bot"].source)
      local entry = last_audit(g, "token_add")
      assert.are.equal("root", entry.actor)
      assert.are.equal("ok", entry.result)
      assert.are.equal("token ci-bot (read, propose)", entry.detail)
      assert.is_falsy(audit_text(g):find(hash.sha256(secret), 1, true))
    end)

    it("makes a token when no hash is given, shows it once, and stores only its hash", function()
      local res, j = call(g, "POST", "/admin/tokens", "root", { name = "oncall", roles = { "admin" } })
      assert.are.equal(201, res.status, res.body)
      local secret = j.secret
      assert.is_truthy(secret:match("^sla_%x+$") and #secret == 68, secret)
      res, j = call(g, "POST", "/admin/rollback", secret, {})
      assert.are_not.equal(401, res.status, res.body)
      assert.are_not.equal(403, res.status, res.body)
      local _, body = listed(g)
      assert.is_falsy(body:find(secret, 1, true))
      local stored = proc.read_file(g.dir .. "/state/tokens.json")
      assert.is_truthy(stored:find(hash.sha256(secret), 1, true), stored)
      assert.is_falsy(stored:find(secret, 1, true))
      assert.is_falsy(audit_text(g):find(secret, 1, true))
      assert.is_falsy(g:log():find(secret, 1, true))
    end)

    it("refuses token management to every role but admin", function()
      for _, who in ipairs({ "reader", "proposer", "approver" }) do
        local res = call(g, "POST", "/admin/tokens", who, { name = "x-" .. who, roles = { "read" } })
        assert.are.equal(403, res.status, who)
        res = call(g, "DELETE", "/admin/tokens/reader", who)
        assert.are.equal(403, res.status, who)
      end
      assert.are.equal(401, (call(g, "GET", "/admin/tokens")).status)
      assert.is_nil(listed(g)["x-reader"])
      assert.are.equal("refused", last_audit(g, "DELETE /admin/tokens/reader").result)
    end)

    it("refuses bad names, unknown roles, bad hashes, duplicates and shadowing sluice.yaml", function()
      local cases = {
        { { name = "has space", roles = { "read" } }, 400 },
        { { name = "ok-name", roles = { "superuser" } }, 400 },
        { { name = "ok-name", roles = {} }, 400 },
        { { name = "ok-name", roles = { "read" }, sha256 = "abc" }, 400 },
        { { name = "reader", roles = { "admin" } }, 409, "config_token" },
        { { name = "twin", roles = { "read" }, sha256 = hash.sha256(token_of("reader")) }, 409 },
      }
      for i, c in ipairs(cases) do
        local res, j = call(g, "POST", "/admin/tokens", "root", c[1])
        assert.are.equal(c[2], res.status, "case " .. i .. ": " .. res.body)
        if c[3] then assert.are.equal(c[3], j.error.code) end
      end
      assert.are.equal(201, (call(g, "POST", "/admin/tokens", "root", { name = "dup", roles = { "read" } })).status)
      local res, j = call(g, "POST", "/admin/tokens", "root", { name = "dup", roles = { "read" } })
      assert.are.equal(409, res.status)
      assert.are.equal("token_exists", j.error.code)
      -- the reader's token still answers as the reader, not as an impostor
      local _, st = call(g, "GET", "/admin/status", "reader")
      assert.are.equal("reader", st.you)
    end)

    it("revokes an API token at once, and refuses to revoke one of sluice.yaml", function()
      local res, j = call(g, "POST", "/admin/tokens", "root", { name = "temp", roles = { "read" } })
      assert.are.equal(201, res.status, res.body)
      local secret = j.secret
      assert.are.equal(200, (call(g, "GET", "/admin/status", secret)).status)
      res, j = call(g, "DELETE", "/admin/tokens/temp", "root")
      assert.are.equal(200, res.status, res.body)
      assert.are.equal("temp", j.revoked)
      res, j = call(g, "GET", "/admin/status", secret)
      assert.are.equal(401, res.status)
      assert.is_nil(listed(g).temp)
      assert.are.equal("token temp (read)", last_audit(g, "token_revoke").detail)
      res, j = call(g, "DELETE", "/admin/tokens/root", "root")
      assert.are.equal(409, res.status)
      assert.are.equal("config_token", j.error.code)
      assert.are.equal(404, (call(g, "DELETE", "/admin/tokens/nobody", "root")).status)
    end)
  end)

  it("keeps API tokens across a restart and never revokes the last admin token", function()
    local dir = proc.tmpdir()
    os.execute("mkdir -p " .. proc.quote(dir .. "/state"))
    -- sluice.yaml holds no admin token: the only ones come from tokens.json
    proc.write_file(dir .. "/state/tokens.json", json.encode({ tokens = {
      { name = "ops", roles = { "admin" }, sha256 = hash.sha256("ops-secret-0c7e"),
        created = "2026-01-01T00:00:00.000Z", created_by = "bootstrap" } } }))
    local opts = { dir = dir, policy = one_backend(mock), config_tokens = { "reader" } }
    local g = admin_gateway(opts)
    local res, j = call(g, "DELETE", "/admin/tokens/ops", "ops-secret-0c7e")
    assert.are.equal(409, res.status, res.body)
    assert.are.equal("last_admin", j.error.code)
    res, j = call(g, "POST", "/admin/tokens", "ops-secret-0c7e", { name = "ops2", roles = { "admin", "read" } })
    assert.are.equal(201, res.status, res.body)
    local second = j.secret
    g = restart(g, opts)
    assert.are.same({ "read", "admin" }, listed(g).ops2.roles)
    res = call(g, "DELETE", "/admin/tokens/ops", second)
    assert.are.equal(200, res.status, res.body)
    res, j = call(g, "DELETE", "/admin/tokens/ops2", second)
    assert.are.equal(409, res.status, res.body)
    assert.are.equal("last_admin", j.error.code)
    g = restart(g, opts)
    assert.are.equal(401, (call(g, "GET", "/admin/status", "ops-secret-0c7e")).status)
    assert.are.equal(200, (call(g, "GET", "/admin/status", second)).status)
    proc.stop(g.proc)
  end)

  describe("the sluice policy CLI", function()
    local g
    setup(function() g = admin_gateway({ policy = one_backend(mock) }) end)
    teardown(function() proc.stop(g.proc) end)

    local function cli(args, who)
      local full = { "policy" }
      for _, a in ipairs(args) do full[#full + 1] = a end
      local tf = proc.write_file(g.dir .. "/" .. who .. ".token", token_of(who) .. "\n")
      for _, a in ipairs({ "--admin", "http://127.0.0.1:" .. g.aport, "--token-file", tf }) do
        full[#full + 1] = a
      end
      return proc.sluice(full, 20)
    end

    it("adds a token into a file, lists it and revokes it", function()
      local out_file = g.dir .. "/made.token"
      local st, out = cli({ "tokens", "add", "deployer", "--roles", "read,propose", "--out", out_file }, "root")
      assert.are.equal(0, st, out)
      local secret = proc.read_file(out_file):match("%S+")
      assert.is_truthy(secret:match("^sla_%x+$"), secret)
      assert.is_falsy(out:find(secret, 1, true), out)
      local _, mode = proc.run("stat -c %a " .. proc.quote(out_file))
      assert.are.equal("600", mode:match("%d+"))
      assert.are.equal(200, (call(g, "GET", "/admin/status", secret)).status)
      st, out = cli({ "tokens", "list" }, "reader")
      assert.are.equal(0, st, out)
      assert.is_truthy(out:find('"name":"deployer"', 1, true), out)
      st, out = cli({ "tokens", "revoke", "deployer" }, "reader")
      assert.are.equal(1, st, out)
      st, out = cli({ "tokens", "revoke", "deployer" }, "root")
      assert.are.equal(0, st, out)
      assert.are.equal(401, (call(g, "GET", "/admin/status", secret)).status)
    end)

    it("adds a token by the hash of a token file", function()
      local f = proc.write_file(g.dir .. "/mine.token", "my-own-token-5a1e\n")
      local st, out = cli({ "tokens", "add", "mine", "--roles", "read", "--hash-of", f }, "root")
      assert.are.equal(0, st, out)
      assert.is_falsy(out:find("secret", 1, true), out)
      assert.are.equal(200, (call(g, "GET", "/admin/status", "my-own-token-5a1e")).status)
    end)

    it("prints status as a table, and the raw answer with --json", function()
      assert(http.chat(g.port))
      local st, out = cli({ "status" }, "reader")
      assert.are.equal(0, st, out)
      local _, live = call(g, "GET", "/admin/status", "reader")
      assert.is_truthy(out:find("version   " .. live.version, 1, true), out)
      assert.is_truthy(out:match("\na %*%s+openai%s+local%s+ok%s+%d+"), out)
      st, out = cli({ "status", "--json" }, "reader")
      assert.are.equal(0, st, out)
      assert.are.equal(live.version, json.decode(out:match("%b{}")).version)
    end)
  end)
end)

describe("backend health in GET /admin/status", function()
  teardown(function() proc.stop_all() end)

  it("reports requests, upstream errors by reason, the last error and the breaker per backend", function()
    local primary = proc.mock({ status = 503 })
    local secondary = proc.mock()
    local policy = json.encode({
      backends = {
        primary = { provider = "openai", url = primary.url, region = "local" },
        secondary = { provider = "openai", url = secondary.url, region = "local" },
        idle = { provider = "openai", url = secondary.url, region = "local" },
      },
      default_backend = "primary",
      models = { chat = { targets = { { backend = "primary", model = "mock-model" },
                                      { backend = "secondary", model = "mock-model" } } } },
      plugins = { { name = "fallback", config = { breaker = { consecutive_failures = 2, cool_down = "60s" } } } },
    })
    local g = admin_gateway({ policy = policy })
    local _, st = call(g, "GET", "/admin/status", "reader")
    local function health(name)
      for _, b in ipairs(st.backends) do if b.name == name then return b.health end end
    end
    assert.are.equal("unknown", health("primary").status)
    assert.are.equal(0, health("primary").requests)
    local before = os.time()
    for _ = 1, 3 do
      local res = assert(http.request(g.port, { method = "POST", path = "/v1/chat/completions",
        headers = { ["content-type"] = "application/json" },
        body = json.encode({ model = "chat", messages = { { role = "user", content = "hi" } } }) }))
      assert.are.equal(200, res.status, res.body)
      assert.are.equal("secondary", res.headers["x-sluice-backend"])
    end
    _, st = call(g, "GET", "/admin/status", "reader")
    local p, s, i = health("primary"), health("secondary"), health("idle")
    -- the breaker opened after two failures: the third request skipped it
    assert.are.equal("down", p.status)
    assert.are.equal("open", p.breaker)
    assert.is_true(p.breaker_open_for_s > 50 and p.breaker_open_for_s <= 60, tostring(p.breaker_open_for_s))
    assert.are.equal(2, p.upstream_errors)
    assert.are.same({ status_5xx = 2 }, p.errors_by_reason)
    assert.are.equal(2, p.recent_errors)
    assert.are.equal("status_5xx", p.last_error)
    local y, mo, d, h, mi, se = p.last_error_at:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)%.%d+Z$")
    assert.is_truthy(y, p.last_error_at)
    assert.is_true(math.abs(os.time({ year = y, month = mo, day = d, hour = h, min = mi, sec = se })
      - os.time(os.date("!*t", before))) <= 5)
    assert.are.equal("ok", s.status)
    assert.are.equal(3, s.requests)
    assert.are.equal(0, s.upstream_errors)
    assert.are.equal(json.null, s.last_error_at)
    assert.are.equal("unknown", i.status)
    assert.are.equal(300, st.health_window_s)
    proc.stop(g.proc)
  end)
end)
