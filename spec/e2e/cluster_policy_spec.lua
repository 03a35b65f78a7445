-- End-to-end: policy distribution across three sluice instances sharing one
-- real Redis (docs/scale-out.md "Policy distribution"). A version published
-- on one instance — other routing and new plugin code — reaches all three
-- while clients stream and call through every instance without pause: no
-- request fails or is cut short, and every instance reports the new version
-- for itself and for the others (GET /admin/status, `sluice policy status`).
-- A fourth instance started afterwards comes up on that version. A version
-- one instance cannot load is refused there, reported, and never applied.
-- Four-eyes holds across instances: a change submitted on one, approved on a
-- second (never by its author, wherever they try), is published on a third.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"
local admin = require "spec.helpers.admin"
local json = require "sluice.json"
local hash = require "sluice.hash"

local TOKENS = {
  root = "tok-root-5c0a91e3", alice = "tok-alice-77d2b0f4", bob = "tok-bob-0e93aa61",
}

local function start_redis(port, dir)
  local r = proc.spawn(("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no "
    .. "--dir %s"):format(port, proc.quote(dir)), dir, "redis-" .. port)
  proc.wait_port(r, port)
  return r
end

local stamp_plugin = admin.stamp_plugin

-- Routes to backend a (even i) or b (odd i); runs the stamp plugin unless
-- `plain` (the policy directory instances start from has none).
local function version_policy(mock_a, mock_b, i, plain)
  return admin.two_backends(mock_a, mock_b, i % 2 == 0 and "a" or "b",
    { plugins = not plain and { { name = "stamp" } } or nil })
end

local function instance(redis_port, n, policy, secret_dir)
  local g = admin.gateway({ policy = policy }, function(dir, aport)
    return {
      workers = 2,
      secret_dirs = { secret_dir or dir },
      log = { access = dir .. "/access.log", level = "info" },
      timeouts = { drain = "5s" },
      cluster = { address = "redis://127.0.0.1:" .. redis_port .. "/0", instance = "gw-" .. n,
                  timeout = "500ms" },
      admin = { listen = "127.0.0.1:" .. aport, state_dir = dir .. "/state", tokens = {
        { name = "root", sha256 = hash.sha256(TOKENS.root), roles = { "admin" } },
        { name = "alice", sha256 = hash.sha256(TOKENS.alice), roles = { "read", "propose", "approve" } },
        { name = "bob", sha256 = hash.sha256(TOKENS.bob), roles = { "read", "approve" } },
      } },
    }
  end)
  g.name = "gw-" .. n
  return g
end

local function call(g, method, path, body, who)
  return admin.call(g, TOKENS[who or "root"], method, path, body)
end

local function eventually(what, f, timeout)
  local deadline = proc.now() + (timeout or 5) * proc.slow
  local last
  while proc.now() < deadline do
    last = f()
    if last then return last end
    proc.sleep(0.05)
  end
  error("not within " .. (timeout or 5) .. "s: " .. what)
end

-- Every instance of the status's list, by name → version.
local function listed(st)
  local out = {}
  for _, i in ipairs(st.instances or {}) do out[i.instance] = i.version end
  return out
end

-- Whether g's status says every one of `names` runs `version`.
local function all_on(g, names, version)
  local res, st = call(g, "GET", "/admin/status")
  if res.status ~= 200 or st.version ~= version then return false end
  local l = listed(st)
  for _, n in ipairs(names) do
    if l[n] ~= version then return false end
  end
  return st
end

-- A client loop: one request after another until the stop file appears;
-- a line per answer: curl's exit code, status, backend, stamp, whole?, kind.
local LOOP = [[
port=$1; kind=$2; out=$3; stop=$4; t=$out.tmp
while [ ! -f "$stop" ]; do
  if [ "$kind" = stream ]; then
    curl -sS --max-time 10 -D $t.h -o $t.b -H 'content-type: application/json' \
      -H 'x-mock-chunks: 5' -H 'x-mock-chunk-delay-ms: 10' \
      -d '{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"hi"}]}' \
      http://127.0.0.1:$port/v1/chat/completions 2>>$out.err
    rc=$?
    if grep -q 'data: \[DONE\]' $t.b 2>/dev/null; then ok=1; else ok=0; fi
  else
    curl -sS --max-time 10 -D $t.h -o $t.b -H 'content-type: application/json' \
      -H 'x-mock-delay-ms: 20' \
      -d '{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}' \
      http://127.0.0.1:$port/v1/chat/completions 2>>$out.err
    rc=$?
    if grep -q '"chatcmpl-mock"' $t.b 2>/dev/null && [ "$(tail -c 1 $t.b)" = "}" ]; then ok=1; else ok=0; fi
  fi
  st=$(head -1 $t.h 2>/dev/null | cut -d' ' -f2)
  h() { grep -i "^$1:" $t.h 2>/dev/null | tr -d '\r' | cut -d' ' -f2; }
  b=$(h x-sluice-backend); s=$(h x-stamp)
  echo "$rc ${st:--} ${b:--} ${s:--} $ok $kind" >> $out
  rm -f $t.h $t.b
done
echo end >> $out
]]

describe("policy distribution: three instances, one Redis", function()
  local redis_port, mock_a, mock_b, gws, secrets
  local NAMES = { "gw-1", "gw-2", "gw-3" }

  setup(function()
    redis_port = proc.free_port()
    start_redis(redis_port, proc.tmpdir())
    mock_a = proc.mock()
    mock_b = proc.mock()
    secrets = proc.tmpdir()
    gws = {}
    for n = 1, 3 do
      gws[n] = instance(redis_port, n, version_policy(mock_a, mock_b, 0, true), n < 3 and secrets or nil)
    end
  end)

  teardown(function() proc.stop_all() end)

  it("switches all three to a version published on one, under load, without a failed request", function()
    local _, st = call(gws[1], "GET", "/admin/status")
    local v0 = st.version
    -- all three started from the same policy: one version, and each sees the others
    eventually("every instance lists the three on " .. v0, function()
      for _, g in ipairs(gws) do
        if not all_on(g, NAMES, v0) then return false end
      end
      return true
    end)

    local script = proc.write_file(gws[1].dir .. "/loop.sh", LOOP)
    local stop = gws[1].dir .. "/STOP"
    local outs = {}
    for n, g in ipairs(gws) do
      for _, kind in ipairs({ "plain", "stream" }) do
        local out = ("%s/load-%d-%s.txt"):format(gws[1].dir, n, kind)
        outs[#outs + 1] = out
        os.execute(("sh %s %d %s %s %s >/dev/null 2>&1 &"):format(proc.quote(script), g.port, kind,
          proc.quote(out), proc.quote(stop)))
      end
    end
    proc.sleep(1)

    -- version 1: routes to b and runs new plugin code
    local res, j = call(gws[1], "POST", "/admin/publish",
      { files = { ["policies/default.yaml"] = proc.yaml(version_policy(mock_a, mock_b, 1)),
                  ["plugins/stamp.lua"] = stamp_plugin("1") } })
    assert.are.equal(200, res.status, res.body)
    local v1 = j.version
    assert.are_not.equal(v0, v1)
    for _, g in ipairs(gws) do
      eventually(g.name .. " reports every instance on " .. v1, function()
        return all_on(g, NAMES, v1)
      end)
    end
    -- new connections on every instance are served by version 1
    for _, g in ipairs(gws) do
      local r = assert(http.chat(g.port))
      assert.are.equal(200, r.status)
      assert.are.equal("b", r.headers["x-sluice-backend"])
      assert.are.equal("1", r.headers["x-stamp"])
    end
    proc.sleep(1)
    proc.write_file(stop, "")
    local deadline = proc.now() + 20
    for _, f in ipairs(outs) do
      while not (proc.read_file(f) or ""):find("end\n", 1, true) and proc.now() < deadline do
        proc.sleep(0.05)
      end
    end

    local total, before, after = 0, 0, 0
    for _, f in ipairs(outs) do
      for line in (proc.read_file(f) or ""):gmatch("[^\n]+") do
        if line ~= "end" then
          local rc, code, be, stamp, ok = line:match("^(%S+) (%S+) (%S+) (%S+) (%S+) %S+$")
          assert.is_truthy(rc, "unreadable load line: " .. line)
          assert.are.equal("0", rc, "curl failed: " .. line .. "\n" .. (proc.read_file(f .. ".err") or ""))
          assert.are.equal("200", code, line)
          assert.are.equal("1", ok, "truncated answer: " .. line)
          -- each answer is wholly one version's: a and no stamp, or b and stamp 1
          if be == "a" then
            assert.are.equal("-", stamp, line)
            before = before + 1
          else
            assert.are.same({ "b", "1" }, { be, stamp }, line)
            after = after + 1
          end
          total = total + 1
        end
      end
    end
    assert.is_true(before > 20 and after > 20, ("before %d, after %d"):format(before, after))

    -- the followers recorded the switch in their admin audit log
    for n = 2, 3 do
      local audit = proc.read_file(gws[n].dir .. "/state/admin-audit.log")
      assert.is_truthy(audit:find('"actor":"root@gw-1"', 1, true), audit)
      assert.is_truthy(audit:find('"action":"follow","result":"ok"', 1, true), audit)
      local _, v = call(gws[n], "GET", "/admin/versions")
      assert.are.equal(v1, v.history[1])
    end

    -- `sluice policy status` on another instance shows all three on v1
    local tokfile = proc.write_file(gws[2].dir .. "/read.token", TOKENS.bob)
    local code, out = proc.sluice({ "policy", "status", "--json", "--admin", "http://127.0.0.1:" .. gws[2].aport,
      "--token-file", tokfile }, 20)
    assert.are.equal(0, code, out)
    local cli = json.decode(out:match("%b{}"))
    assert.are.equal(v1, cli.version)
    assert.are.same({ ["gw-1"] = v1, ["gw-2"] = v1, ["gw-3"] = v1 }, listed(cli))
    -- and as a table, one line per instance
    code, out = proc.sluice({ "policy", "status", "--admin", "http://127.0.0.1:" .. gws[2].aport,
      "--token-file", tokfile }, 20)
    assert.are.equal(0, code, out)
    for n = 1, 3 do
      assert.is_truthy(out:find("\ngw%-" .. n .. "%s+" .. v1), out)
    end
  end)

  it("starts a fourth instance on the latest published version", function()
    local _, st = call(gws[1], "GET", "/admin/status")
    local latest = st.version
    -- its own policy directory says otherwise
    local g4 = instance(redis_port, 4, version_policy(mock_a, mock_b, 0, true))
    local _, st4 = call(g4, "GET", "/admin/status")
    assert.are.equal(latest, st4.version)
    assert.is_truthy(g4:log():find("starting on " .. latest .. ", the latest published version", 1, true),
      g4:log())
    local r = assert(http.chat(g4.port))
    assert.are.equal("b", r.headers["x-sluice-backend"])
    assert.are.equal("1", r.headers["x-stamp"])
    eventually("the others list the fourth", function()
      return all_on(gws[2], { "gw-1", "gw-2", "gw-3", "gw-4" }, latest)
    end)
    g4:stop()
  end)

  it("refuses on one instance a version it cannot load, and says so everywhere", function()
    local _, st = call(gws[1], "GET", "/admin/status")
    local live = st.version
    -- a credential file gw-3 may not read (its secret_dirs differ)
    proc.write_file(secrets .. "/key-b", "sk-test-b")
    local p = version_policy(mock_a, mock_b, 3)
    p.backends.b.credentials = "file:" .. secrets .. "/key-b"
    local res, j = call(gws[1], "POST", "/admin/publish",
      { files = { ["policies/default.yaml"] = proc.yaml(p), ["plugins/stamp.lua"] = stamp_plugin("3") } })
    assert.are.equal(200, res.status, res.body)
    local v = j.version
    eventually("gw-2 switched", function() return all_on(gws[2], { "gw-1", "gw-2" }, v) end)
    local refused = eventually("gw-3 reports the refusal", function()
      local _, s = call(gws[1], "GET", "/admin/status")
      for _, i in ipairs(s.instances) do
        if i.instance == "gw-3" and i.refused and i.refused.version == v then return i end
      end
      return false
    end)
    assert.are.equal(live, refused.version)
    local _, st3 = call(gws[3], "GET", "/admin/status")
    assert.are.equal(live, st3.version)
    local r = assert(http.chat(gws[3].port))
    assert.are.equal("1", r.headers["x-stamp"])
    local audit = proc.read_file(gws[3].dir .. "/state/admin-audit.log")
    assert.is_truthy(audit:find('"action":"follow","result":"refused"', 1, true), audit)
    assert.is_truthy(gws[3]:log():find("is refused here, the live policy stays: policies/default.yaml:", 1, true),
      gws[3]:log())
    -- the cluster goes on: a later version reaches gw-3 again
    res, j = call(gws[1], "POST", "/admin/publish",
      { files = { ["policies/default.yaml"] = proc.yaml(version_policy(mock_a, mock_b, 4)),
                  ["plugins/stamp.lua"] = stamp_plugin("4") } })
    assert.are.equal(200, res.status, res.body)
    for _, g in ipairs(gws) do
      eventually(g.name .. " on the later version", function() return all_on(g, NAMES, j.version) end)
    end
  end)

  it("counts an approval on one instance for a change submitted on another, published on a third", function()
    -- adding a backend needs a second person
    local p = version_policy(mock_a, mock_b, 5)
    p.backends.c = { provider = "openai", url = mock_a.url, region = "local" }
    p.plugins = { { name = "stamp" } }
    local res, j = call(gws[1], "POST", "/admin/changes",
      { files = { ["policies/default.yaml"] = proc.yaml(p), ["plugins/stamp.lua"] = stamp_plugin("5") },
        message = "add backend c" }, "alice")
    assert.are.equal(201, res.status, res.body)
    local id, v = j.change.id, j.change.version
    assert.is_true(j.change.needs_approval)
    -- seen on the others
    local _, c2 = call(gws[2], "GET", "/admin/changes/" .. id, nil, "bob")
    assert.are.equal("pending", c2.change.status)
    assert.are.equal("alice", c2.change.author)
    -- not publishable on the third yet, and the author cannot approve it anywhere
    res, j = call(gws[3], "POST", "/admin/publish", { change = id }, "bob")
    assert.are.equal(403, res.status, res.body)
    assert.are.equal("needs_approval", j.error.code)
    res, j = call(gws[2], "POST", "/admin/changes/" .. id .. "/approve", nil, "alice")
    assert.are.equal(403, res.status, res.body)
    assert.are.equal("four_eyes", j.error.code)
    -- bob approves on the second
    res, j = call(gws[2], "POST", "/admin/changes/" .. id .. "/approve", nil, "bob")
    assert.are.equal(200, res.status, res.body)
    assert.are.same({ "bob" }, j.change.approvers)
    -- and it is published on the third, reaching every instance
    res, j = call(gws[3], "POST", "/admin/publish", { change = id }, "bob")
    assert.are.equal(200, res.status, res.body)
    assert.are.equal(v, j.version)
    assert.are.same({}, j.flags)
    for _, g in ipairs(gws) do
      eventually(g.name .. " on the approved change", function() return all_on(g, NAMES, v) end)
    end
    local _, c1 = call(gws[1], "GET", "/admin/changes/" .. id, nil, "alice")
    assert.are.equal("published", c1.change.status)
    assert.are.same({ "bob" }, c1.change.approvers)
    res = call(gws[1], "POST", "/admin/changes/" .. id .. "/approve", nil, "bob")
    assert.are.equal(409, res.status, res.body)
  end)
end)
