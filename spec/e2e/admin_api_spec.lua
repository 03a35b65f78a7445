-- End-to-end: the admin API. Every endpoint answers only a bearer token
-- holding its role; guessing tokens gets an address locked out; a change
-- that touches backends needs a second person; versions are stored, rolled
-- back, and come back after a restart; every action is in the admin audit
-- log. Real binary, real sockets, a temporary state directory per gateway.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"
local admin = require "spec.helpers.admin"
local certs_for = require "spec.helpers.certs"
local json = require "sluice.json"
local hash = require "sluice.hash"

local ROLES = {
  reader = { "read" }, proposer = { "propose" }, approver = { "approve" },
  root = { "admin" }, alice = { "propose", "approve" }, bob = { "approve" },
}

local function token_of(name) return "tok-" .. name .. "-5f1c0e9a7d" end

local function admin_gateway(opts)
  return admin.gateway(opts, function(dir, aport)
    local toks, names = {}, {}
    for name in pairs(ROLES) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do
      toks[#toks + 1] = { name = name, sha256 = hash.sha256(token_of(name)), roles = ROLES[name] }
    end
    return proc.merge({ workers = 2, log = { level = "info" },
      admin = proc.merge({ listen = "127.0.0.1:" .. aport, state_dir = dir .. "/state",
                           tokens = toks, max_failures = 1000 }, opts.admin) }, opts.config)
  end)
end

local function call(g, method, path, who, body)
  return admin.call(g, who and (ROLES[who] and token_of(who) or who), method, path, body, 20)
end

local two_backends = admin.two_backends

local function bundle(policy, plugins, message)
  local files = { ["policies/default.yaml"] = type(policy) == "string" and policy or proc.yaml(policy) }
  for name, code in pairs(plugins or {}) do files["plugins/" .. name .. ".lua"] = code end
  return { files = files, message = message }
end

local function backend_of_next_request(g)
  local res = assert(http.chat(g.port))
  assert.are.equal(200, res.status, res.body)
  return res.headers["x-sluice-backend"]
end

local function audit_lines(g)
  local out = {}
  for line in (proc.read_file(g.dir .. "/state/admin-audit.log") or ""):gmatch("[^\n]+") do
    out[#out + 1] = json.decode(line)
  end
  return out
end

local function last_audit(g, action)
  local lines = audit_lines(g)
  for i = #lines, 1, -1 do
    if lines[i].action == action then return lines[i] end
  end
end

describe("the admin API", function()
  local mock_a, mock_b

  setup(function()
    mock_a = proc.mock()
    mock_b = proc.mock()
  end)

  teardown(function()
    proc.stop_all()
  end)

  describe("roles", function()
    local g
    setup(function() g = admin_gateway({ policy = two_backends(mock_a, mock_b, "a") }) end)
    teardown(function() proc.stop(g.proc) end)

    local function endpoints()
      local valid = bundle(two_backends(mock_a, mock_b, "a"))
      return {
        { "GET", "/admin/status", "read" },
        { "GET", "/admin/policy", "read" },
        { "GET", "/admin/versions", "read" },
        { "GET", "/admin/changes", "read" },
        { "GET", "/admin/changes/00000000000000aa", "read" },
        { "GET", "/admin/exceptions", "read" },
        { "GET", "/admin/audit", "read" },
        { "POST", "/admin/policy/validate", "propose", valid },
        { "POST", "/admin/policy/diff", "propose", valid },
        { "POST", "/admin/changes", "propose", valid },
        { "POST", "/admin/changes/00000000000000aa/approve", "approve" },
        { "POST", "/admin/publish", "approve", { change = "00000000000000aa" } },
        { "POST", "/admin/rollback", "admin", { version = "00000000000000aa" } },
        { "POST", "/admin/reload", "admin" },
      }
    end

    it("answers every endpoint to a token with its role and refuses the others with 403", function()
      local tried = 0
      for _, ep in ipairs(endpoints()) do
        for _, who in ipairs({ "reader", "proposer", "approver", "root" }) do
          local roles = {}
          for _, r in ipairs(ROLES[who]) do roles[r] = true end
          local allowed = roles[ep[3]] or roles.admin
          local res, j = call(g, ep[1], ep[2], who, ep[4])
          local what = ("%s %s as %s: %d %s"):format(ep[1], ep[2], who, res.status, res.body)
          if allowed then
            assert.is_true(res.status ~= 401 and res.status ~= 403 and res.status < 500, what)
          else
            assert.are.equal(403, res.status, what)
            assert.are.equal("forbidden", j.error.code, what)
            assert.is_truthy(j.error.message:find("'" .. ep[3] .. "'", 1, true), what)
          end
          tried = tried + 1
        end
      end
      assert.are.equal(14 * 4, tried)
    end)

    it("answers 401 without a token or with a wrong one, on every endpoint", function()
      for _, ep in ipairs(endpoints()) do
        local res, j = call(g, ep[1], ep[2], nil, ep[4])
        assert.are.equal(401, res.status, ep[2])
        assert.are.equal("missing_token", j.error.code)
        assert.is_truthy(res.headers["www-authenticate"])
        res, j = call(g, ep[1], ep[2], "not-a-token", ep[4])
        assert.are.equal(401, res.status, ep[2])
        assert.are.equal("invalid_token", j.error.code)
      end
    end)

    it("records refused actions and failed logins in the admin audit log, never the token", function()
      call(g, "POST", "/admin/rollback", "reader", {})
      call(g, "GET", "/admin/status", "wrong-token-123")
      local refused = last_audit(g, "POST /admin/rollback")
      assert.are.equal("reader", refused.actor)
      assert.are.equal("refused", refused.result)
      local login = last_audit(g, "login")
      assert.are.equal("refused", login.result)
      assert.are.equal("127.0.0.1", login.client)
      local text = proc.read_file(g.dir .. "/state/admin-audit.log")
      assert.is_nil(text:find("wrong-token-123", 1, true))
      assert.is_nil(text:find(token_of("reader"), 1, true))
    end)
  end)

  it("locks an address out after too many wrong tokens, then lets it in again", function()
    local g = admin_gateway({ policy = two_backends(mock_a, mock_b, "a"),
      admin = { max_failures = 5, lockout = "2s" } })
    for i = 1, 5 do
      local res = call(g, "GET", "/admin/status", "guess-" .. i)
      assert.are.equal(401, res.status)
    end
    -- now even the right token is refused from this address
    local res, j = call(g, "GET", "/admin/status", "root")
    assert.are.equal(429, res.status)
    assert.are.equal("too_many_failures", j.error.code)
    local wait = tonumber(res.headers["retry-after"])
    assert.is_true(wait >= 1 and wait <= 2)
    assert.are.equal("refused", last_audit(g, "lockout").result)
    proc.sleep(wait + 0.2)
    res = call(g, "GET", "/admin/status", "root")
    assert.are.equal(200, res.status)
    proc.stop(g.proc)
  end)

  describe("four-eyes", function()
    local g
    before_each(function()
      g = admin_gateway({ policy = two_backends(mock_a, mock_b, "a") })
    end)
    after_each(function() proc.stop(g.proc) end)

    local function with_new_backend()
      local p = two_backends(mock_a, mock_b, "c")
      p.backends.c = { provider = "openai", url = mock_b.url, region = "eu" }
      return p
    end

    it("refuses to publish a new backend until a second person approves it", function()
      local res, j = call(g, "POST", "/admin/changes", "alice", bundle(with_new_backend(), nil, "add c"))
      assert.are.equal(201, res.status, res.body)
      local change = j.change
      assert.is_true(change.needs_approval)
      assert.are.same({ "backends" }, change.diff.approval_reasons)
      assert.are.same({ "c" }, change.diff.backends.added)

      -- the author may not approve their own change…
      res, j = call(g, "POST", "/admin/changes/" .. change.id .. "/approve", "alice")
      assert.are.equal(403, res.status)
      assert.are.equal("four_eyes", j.error.code)
      -- …nor publish it unapproved
      res, j = call(g, "POST", "/admin/publish", "alice", { change = change.id })
      assert.are.equal(403, res.status)
      assert.are.equal("needs_approval", j.error.code)
      assert.are.equal("a", backend_of_next_request(g))

      res, j = call(g, "POST", "/admin/changes/" .. change.id .. "/approve", "bob")
      assert.are.equal(200, res.status, res.body)
      assert.are.same({ "bob" }, j.change.approvers)
      res, j = call(g, "POST", "/admin/publish", "alice", { change = change.id })
      assert.are.equal(200, res.status, res.body)
      assert.are.equal(change.version, j.version)
      assert.are.equal("c", backend_of_next_request(g))

      local entry = last_audit(g, "publish")
      assert.are.equal("alice", entry.actor)
      assert.are.equal("ok", entry.result)
      assert.are.equal(change.id, entry.change)
      assert.are.equal(change.version, entry.version_after)
      assert.are.same({}, entry.flags)
      assert.are.same({ "backend c added", "default backend a -> c" }, entry.diff.summary)
      _, j = call(g, "GET", "/admin/changes/" .. change.id, "reader")
      assert.are.equal("published", j.change.status)
    end)

    it("lets a change that touches no backend be published without approval", function()
      local p = two_backends(mock_a, mock_b, "a", { models = {
        ["m-1"] = { targets = { { backend = "a", model = "mock-model" } } } } })
      local res, j = call(g, "POST", "/admin/changes", "alice", bundle(p))
      assert.are.equal(201, res.status, res.body)
      assert.is_false(j.change.needs_approval)
      assert.are.same({ "m-1" }, j.change.diff.models.allowed)
      res = call(g, "POST", "/admin/publish", "alice", { change = j.change.id })
      assert.are.equal(200, res.status, res.body)
    end)

    it("extends the rule with governance.require_approval of the live policy", function()
      local strict = two_backends(mock_a, mock_b, "a", { governance = { require_approval = { "models" } } })
      local res = call(g, "POST", "/admin/publish", "root", bundle(strict))
      assert.are.equal(200, res.status, res.body)
      local p = two_backends(mock_a, mock_b, "a", { governance = { require_approval = { "models" } },
        models = { ["m-1"] = { targets = { { backend = "a", model = "mock-model" } } } } })
      local j
      res, j = call(g, "POST", "/admin/changes", "alice", bundle(p))
      assert.is_true(j.change.needs_approval)
      assert.are.same({ "models" }, j.change.diff.approval_reasons)
      res = call(g, "POST", "/admin/publish", "alice", { change = j.change.id })
      assert.are.equal(403, res.status)
    end)

    it("allows an admin to publish directly, flagged in the audit", function()
      local res, j = call(g, "POST", "/admin/publish", "root", bundle(with_new_backend()))
      assert.are.equal(200, res.status, res.body)
      assert.are.same({ "direct_publish", "four_eyes_bypassed" }, j.flags)
      local entry = last_audit(g, "publish")
      assert.are.equal("root", entry.actor)
      assert.are.same({ "direct_publish", "four_eyes_bypassed" }, entry.flags)
      assert.are.equal("c", backend_of_next_request(g))
      -- a direct upload is the admin's alone
      res, j = call(g, "POST", "/admin/publish", "approver", bundle(two_backends(mock_a, mock_b, "a")))
      assert.are.equal(403, res.status)
    end)
  end)

  describe("versions", function()
    it("rolls back to the previous version, and to a named one", function()
      local g = admin_gateway({ policy = two_backends(mock_a, mock_b, "a") })
      local _, st = call(g, "GET", "/admin/status", "reader")
      local v1 = st.version
      local res, j = call(g, "POST", "/admin/publish", "root", bundle(two_backends(mock_a, mock_b, "b")))
      assert.are.equal(200, res.status, res.body)
      local v2 = j.version
      assert.are_not.equal(v1, v2)
      assert.are.equal("b", backend_of_next_request(g))

      res, j = call(g, "POST", "/admin/rollback", "root")
      assert.are.equal(200, res.status, res.body)
      assert.are.equal(v1, j.version)
      assert.are.equal("a", backend_of_next_request(g))
      _, j = call(g, "GET", "/admin/versions", "reader")
      assert.are.same({ v1, v2, v1 }, j.history)
      local entry = last_audit(g, "rollback")
      assert.are.equal(v2, entry.version_before)
      assert.are.equal(v1, entry.version_after)
      -- both versions stay stored
      assert.is_truthy(proc.read_file(g.dir .. "/state/versions/" .. v2 .. "/policies/default.yaml"))

      -- a second rollback undoes the first
      res, j = call(g, "POST", "/admin/rollback", "root")
      assert.are.equal(200, res.status, res.body)
      assert.are.equal(v2, j.version)
      assert.are.equal("b", backend_of_next_request(g))

      res, j = call(g, "POST", "/admin/rollback", "root", { version = v1 })
      assert.are.equal(200, res.status, res.body)
      assert.are.equal("a", backend_of_next_request(g))
      res, j = call(g, "POST", "/admin/rollback", "root", { version = "0123456789abcdef" })
      assert.are.equal(404, res.status)
      proc.stop(g.proc)
    end)

    it("keeps the last keep_versions versions and those of pending changes", function()
      local g = admin_gateway({ policy = two_backends(mock_a, mock_b, "a"), admin = { keep_versions = 2 } })
      local _, j = call(g, "POST", "/admin/changes", "alice",
        bundle(two_backends(mock_a, mock_b, "a", { models = { m = { targets = { { backend = "b", model = "x" } } } } })))
      local pending = j.change.version
      local ids = {}
      for i = 1, 4 do
        local p = two_backends(mock_a, mock_b, i % 2 == 0 and "a" or "b")
        p.backends.a.region = "r" .. i
        local res
        res, j = call(g, "POST", "/admin/publish", "root", bundle(p))
        assert.are.equal(200, res.status, res.body)
        ids[i] = j.version
      end
      local st, out = proc.run("ls " .. proc.quote(g.dir .. "/state/versions"))
      assert.are.equal(0, st)
      local stored = {}
      for id in out:gmatch("%x+") do stored[#stored + 1] = id end
      table.sort(stored)
      local want = { ids[3], ids[4], pending }
      table.sort(want)
      assert.are.same(want, stored)
      proc.stop(g.proc)
    end)

    it("has nothing to roll back to on a fresh state", function()
      local g = admin_gateway({ policy = two_backends(mock_a, mock_b, "a") })
      local res, j = call(g, "POST", "/admin/rollback", "root")
      assert.are.equal(409, res.status)
      assert.are.equal("no_previous", j.error.code)
      proc.stop(g.proc)
    end)

    it("comes back on the last published version after a restart", function()
      local g = admin_gateway({ policy = two_backends(mock_a, mock_b, "a") })
      local res, j = call(g, "POST", "/admin/publish", "root",
        bundle(two_backends(mock_a, mock_b, "b"), nil))
      assert.are.equal(200, res.status, res.body)
      local v2 = j.version
      assert.are.equal(0, proc.stop(g.proc))
      -- the policy directory still says "a"; the published version wins
      local g2 = admin_gateway({ dir = g.dir, port = g.port, policy = two_backends(mock_a, mock_b, "a") })
      assert.are.equal("b", backend_of_next_request(g2))
      local _, st = call(g2, "GET", "/admin/status", "reader")
      assert.are.equal(v2, st.version)
      -- and a reload applies the directory again
      res = call(g2, "POST", "/admin/reload", "root")
      assert.are.equal(200, res.status, res.body)
      assert.are.equal("a", backend_of_next_request(g2))
      proc.stop(g2.proc)
    end)

    it("serves the live files and plugin sources, and stores each version whole", function()
      local stamp = "return { name = 'stamp', access = function(ctx) ctx:set_response_header('x-stamp', 's1') end }\n"
      local p = two_backends(mock_a, mock_b, "a", { plugins = { { name = "stamp" } } })
      local g = admin_gateway({ policy = two_backends(mock_a, mock_b, "a") })
      local res, j = call(g, "POST", "/admin/publish", "root", bundle(p, { stamp = stamp }))
      assert.are.equal(200, res.status, res.body)
      local v = j.version
      local chat = assert(http.chat(g.port))
      assert.are.equal("s1", chat.headers["x-stamp"])
      _, j = call(g, "GET", "/admin/policy", "reader")
      assert.are.equal(v, j.version)
      assert.are.equal(stamp, j.files["plugins/stamp.lua"])
      assert.is_truthy(j.files["policies/default.yaml"]:find("stamp", 1, true))
      assert.are.equal(stamp, proc.read_file(g.dir .. "/state/versions/" .. v .. "/plugins/stamp.lua"))
      proc.stop(g.proc)
    end)
  end)

  describe("validate and diff", function()
    local g
    setup(function() g = admin_gateway({ policy = two_backends(mock_a, mock_b, "a") }) end)
    teardown(function() proc.stop(g.proc) end)

    it("validates a bundle without changing anything", function()
      local stamp = "return { name = 'stamp', init = function(conf) end }\n"
      local p = two_backends(mock_a, mock_b, "b", { plugins = { { name = "stamp" } } })
      local res, j = call(g, "POST", "/admin/policy/validate", "proposer", bundle(p, { stamp = stamp }))
      assert.are.equal(200, res.status, res.body)
      assert.is_true(j.ok)
      assert.are.same({ "stamp" }, j.plugins)
      assert.are.equal("a", backend_of_next_request(g))
    end)

    it("names the uploaded file, line and key of an invalid policy", function()
      local bad = "backends:\n  a:\n    provider: openai\n    url: nowhere\ndefault_backend: a\n"
      local res, j = call(g, "POST", "/admin/policy/validate", "proposer", bundle(bad))
      assert.are.equal(422, res.status)
      assert.is_false(j.ok)
      assert.are.equal("policies/default.yaml", j.error.file)
      assert.are.equal(4, j.error.line)
      assert.are.equal("backends.a.url", j.error.key)
      assert.is_nil(j.error.message:find("/tmp", 1, true), j.error.message)
    end)

    it("runs each plugin's init when validating", function()
      local boom = "return { name = 'boom', init = function() error('no table for you') end }\n"
      local p = two_backends(mock_a, mock_b, "a", { plugins = { { name = "boom" } } })
      local res, j = call(g, "POST", "/admin/policy/validate", "proposer", bundle(p, { boom = boom }))
      assert.are.equal(422, res.status)
      assert.is_truthy(j.error.message:find("no table for you", 1, true), j.error.message)
    end)

    it("refuses files outside policies/ and plugins/", function()
      local res = call(g, "POST", "/admin/policy/validate", "proposer",
        { files = { ["../../etc/x.yaml"] = "a: 1\n" } })
      assert.are.equal(400, res.status)
    end)

    it("describes a change in governance terms", function()
      local now = os.time()
      local p = {
        backends = {
          b = { provider = "openai", url = mock_b.url, region = "eu", data_classes = { "public" } },
          c = { provider = "openai", url = mock_a.url, region = "local" },
        },
        default_backend = "c",
        models = { ["m-new"] = { targets = { { backend = "c", model = "x" } },
                                 deprecated = "2026-01-01", sunset = "2027-01-01", replacement = "m-2" },
                   ["m-2"] = { targets = { { backend = "c", model = "y" } } } },
        exceptions = { {
          id = "EXC-1", owner = "jane@example.com", reason = "pilot",
          created = os.date("!%Y-%m-%d", now - 86400), expires = os.date("!%Y-%m-%d", now + 3 * 86400),
          apps = { "claims" }, grants = { models = { "m-new" } },
        } },
      }
      local res, d = call(g, "POST", "/admin/policy/diff", "proposer", bundle(p))
      assert.are.equal(200, res.status, res.body)
      assert.are.same({ "c" }, d.backends.added)
      assert.are.same({ "a" }, d.backends.removed)
      assert.are.same({ { name = "b", fields = { "region", "data_classes" } } }, d.backends.changed)
      assert.are.same({ before = "a", after = "c" }, d.backends.default)
      assert.are.same({ "m-2", "m-new" }, d.models.allowed)
      assert.are.equal("EXC-1", d.exceptions.added[1].id)
      assert.are.equal("EXC-1", d.exceptions.expiring[1].id)
      assert.is_true(d.needs_approval)
      assert.are.same({ "backends", "data_classes" }, d.approval_reasons)
    end)

    it("reports consumers, quotas and plugin code that changed", function()
      local function pol(limit, team)
        return two_backends(mock_a, mock_b, "a", { plugins = {
          { name = "key-auth", config = { consumers = { app1 = { team = team, keys = {} } } } },
          { name = "quota", config = { limits = { { by = "team", requests = limit } } } },
          { name = "stamp" },
        } })
      end
      local v1 = "return { name = 'stamp' }\n"
      local v2 = "return { name = 'stamp', priority = 1 }\n"
      local res = call(g, "POST", "/admin/publish", "root", bundle(pol(10, "x"), { stamp = v1 }))
      assert.are.equal(200, res.status, res.body)
      local d
      res, d = call(g, "POST", "/admin/policy/diff", "proposer", bundle(pol(20, "y"), { stamp = v2 }))
      assert.are.equal(200, res.status, res.body)
      assert.are.same({ { name = "key-auth:app1", fields = { "team" } } }, d.consumers.changed)
      assert.are.equal(10, d.quotas.changed[1].before.requests)
      assert.are.equal(20, d.quotas.changed[1].after.requests)
      assert.are.same({ "stamp" }, d.plugins.code_changed)
      assert.is_false(d.needs_approval)
      -- taking a plugin out of the chain needs a second person
      local p = pol(20, "y")
      table.remove(p.plugins, 2)
      res, d = call(g, "POST", "/admin/policy/diff", "proposer", bundle(p, { stamp = v1 }))
      assert.are.same({ "quota" }, d.plugins.removed)
      assert.are.same({ "plugins_removed" }, d.approval_reasons)
    end)
  end)

  it("lists the live exceptions", function()
    local now = os.time()
    local p = two_backends(mock_a, mock_b, "a", { exceptions = { {
      id = "EXC-7", owner = "ops@example.com", reason = "migration",
      created = os.date("!%Y-%m-%d", now - 86400), expires = os.date("!%Y-%m-%d", now + 30 * 86400),
      teams = { "core" }, grants = { backends = { "b" } },
    } } })
    local g = admin_gateway({ policy = p })
    local res, j = call(g, "GET", "/admin/exceptions", "reader")
    assert.are.equal(200, res.status, res.body)
    assert.are.equal(1, #j.exceptions)
    assert.are.equal("EXC-7", j.exceptions[1].id)
    proc.stop(g.proc)
  end)

  describe("configuration", function()
    it("refuses an admin listener off loopback without TLS", function()
      local dir = proc.tmpdir()
      proc.write_file(dir .. "/sluice.yaml", proc.yaml({
        listen = "127.0.0.1:" .. proc.free_port(),
        admin = { listen = "0.0.0.0:" .. proc.free_port(), tokens = {
          { name = "root", sha256 = hash.sha256("x"), roles = { "admin" } } } },
      }))
      local st, out = proc.sluice({ "check", "-c", dir .. "/sluice.yaml" })
      assert.are.equal(2, st, out)
      assert.is_truthy(out:find("admin.listen", 1, true), out)
      assert.is_truthy(out:find("needs tls", 1, true), out)
    end)

    it("exits with the reason when the admin address is taken", function()
      local socket = require "socket"
      local busy = assert(socket.bind("127.0.0.1", 0))
      local _, bport = busy:getsockname()
      local g = proc.gateway({ policy = two_backends(mock_a, mock_b, "a"), no_wait = true,
        config = function(_, dir)
          return { admin = { listen = "127.0.0.1:" .. bport, state_dir = dir .. "/state" } }
        end })
      local st = proc.wait(g.proc, 10 * proc.slow)
      busy:close()
      assert.are.equal(1, st, g:log())
      assert.is_truthy(g:log():find(tostring(bport), 1, true), g:log())
      proc.stop(g.proc)
    end)

    it("refuses a token that is not a SHA-256 or a role that does not exist", function()
      local dir = proc.tmpdir()
      local cfg = { listen = "127.0.0.1:1", admin = { listen = "127.0.0.1:2", tokens = {
        { name = "root", sha256 = "plaintext-token", roles = { "admin" } } } } }
      proc.write_file(dir .. "/sluice.yaml", proc.yaml(cfg))
      local st, out = proc.sluice({ "check", "-c", dir .. "/sluice.yaml" })
      assert.are.equal(2, st)
      assert.is_truthy(out:find("admin.tokens[0].sha256", 1, true), out)
      cfg.admin.tokens[1] = { name = "root", sha256 = hash.sha256("x"), roles = { "superuser" } }
      proc.write_file(dir .. "/sluice.yaml", proc.yaml(cfg))
      st, out = proc.sluice({ "check", "-c", dir .. "/sluice.yaml" })
      assert.are.equal(2, st)
      assert.is_truthy(out:find("'superuser' is not a role", 1, true), out)
    end)
  end)

  describe("the sluice policy CLI", function()
    local g, tokfile, dir
    setup(function()
      g = admin_gateway({ policy = two_backends(mock_a, mock_b, "a") })
      tokfile = proc.write_file(g.dir .. "/alice.token", token_of("alice") .. "\n")
      proc.write_file(g.dir .. "/bob.token", token_of("bob") .. "\n")
      dir = g.dir .. "/repo/policies"
      os.execute("mkdir -p " .. proc.quote(dir) .. " " .. proc.quote(g.dir .. "/repo/plugins"))
    end)
    teardown(function() proc.stop(g.proc) end)

    local function cli(args, token)
      local full = { "policy" }
      for _, a in ipairs(args) do full[#full + 1] = a end
      for _, a in ipairs({ "--admin", "http://127.0.0.1:" .. g.aport, "--token-file", token or tokfile }) do
        full[#full + 1] = a
      end
      return proc.sluice(full, 20)
    end

    it("validates, diffs, submits, approves and publishes a policy folder", function()
      proc.write_file(dir .. "/default.yaml", proc.yaml(two_backends(mock_a, mock_b, "b",
        { plugins = { { name = "stamp" } } })))
      proc.write_file(g.dir .. "/repo/plugins/stamp.lua",
        "return { name = 'stamp', access = function(ctx) ctx:set_response_header('x-stamp', 'cli') end }\n")
      local st, out = cli({ "validate", dir })
      assert.are.equal(0, st, out)
      assert.is_truthy(out:find('"ok":true', 1, true), out)
      st, out = cli({ "diff", dir })
      assert.are.equal(0, st, out)
      assert.is_truthy(out:find("default backend a -> b", 1, true), out)
      st, out = cli({ "submit", dir, "-m", "route to b" })
      assert.are.equal(0, st, out)
      local id = out:match('"id":"(%x+)"')
      st, out = cli({ "publish", id })
      assert.are.equal(1, st, out)
      assert.is_truthy(out:find("needs approval", 1, true), out)
      st, out = cli({ "approve", id }, g.dir .. "/bob.token")
      assert.are.equal(0, st, out)
      st, out = cli({ "publish", id })
      assert.are.equal(0, st, out)
      local res = assert(http.chat(g.port))
      assert.are.equal("b", res.headers["x-sluice-backend"])
      assert.are.equal("cli", res.headers["x-stamp"])
      st, out = cli({ "status", "--json" }, proc.write_file(g.dir .. "/reader.token", token_of("reader")))
      assert.are.equal(0, st, out)
      assert.is_truthy(out:find('"version"', 1, true), out)
    end)

    it("fails a CI step on an invalid policy with its file and line", function()
      local bad = g.dir .. "/bad/policies"
      os.execute("mkdir -p " .. proc.quote(bad))
      proc.write_file(bad .. "/x.yaml", "backends:\n  a:\n    url: ftp://x\n")
      local st, out = cli({ "validate", bad })
      assert.are.equal(1, st, out)
      assert.is_truthy(out:find("policies/x.yaml:3: backends.a.url", 1, true), out)
    end)

    it("speaks HTTPS to an admin listener with TLS, verifying its certificate", function()
      local certs = certs_for.localhost(g.dir .. "/certs", "admin spec CA")
      local aport = proc.free_port()
      local tg = admin_gateway({ aport = aport, policy = two_backends(mock_a, mock_b, "a"), admin = {
        listen = { address = "127.0.0.1:" .. aport,
                   tls = { cert = certs.cert, key = certs.key } } } })
      local reader = proc.write_file(g.dir .. "/reader.token", token_of("reader"))
      local url = "https://localhost:" .. tg.aport
      local st, out = proc.sluice({ "policy", "status", "--json", "--admin", url, "--token-file", reader,
        "--ca-file", certs.ca }, 20)
      assert.are.equal(0, st, out)
      assert.is_truthy(out:find('"you":"reader"', 1, true), out)
      -- without the CA the certificate is not trusted: no token is sent
      st, out = proc.sluice({ "policy", "status", "--admin", url, "--token-file", reader }, 20)
      assert.are.equal(2, st, out)
      proc.stop(tg.proc)
    end)

    it("prints the SHA-256 a token is configured by", function()
      local st, out = proc.sluice({ "policy", "hash-token", "--token-file", tokfile })
      assert.are.equal(0, st, out)
      assert.are.equal(hash.sha256(token_of("alice")), out:match("%x+"))
    end)
  end)
end)
