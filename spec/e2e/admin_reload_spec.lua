-- End-to-end: publishing under load. While clients stream and call without
-- pause, 100 policy versions are published, each routing to the other
-- backend and carrying new plugin code: no request fails or is cut short,
-- and every answer is served by exactly one version (the backend and the
-- plugin's stamp it got are those of the version its access-log record
-- names). A version that one worker refuses is rolled back on all of them.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"
local admin = require "spec.helpers.admin"
local json = require "sluice.json"
local hash = require "sluice.hash"

local TOKEN = "tok-root-8d1e77a2"

local function admin_gateway(policy, extra)
  return admin.gateway({ policy = policy }, function(dir, aport)
    return proc.merge({
      workers = 2,
      log = { access = dir .. "/access.log", level = "info" },
      timeouts = { drain = "5s" },
      admin = { listen = "127.0.0.1:" .. aport, state_dir = dir .. "/state",
                tokens = { { name = "root", sha256 = hash.sha256(TOKEN), roles = { "admin" } } } },
    }, extra)
  end)
end

local function call(g, method, path, body)
  return admin.call(g, TOKEN, method, path, body)
end

local stamp_plugin = admin.stamp_plugin

-- Version i: routes to a or b, and runs the stamp plugin unless `plain`
-- (the policy directory a gateway starts from has no stamp plugin).
local function version_policy(mock_a, mock_b, i, plain)
  return admin.two_backends(mock_a, mock_b, i % 2 == 0 and "a" or "b",
    { plugins = not plain and { { name = "stamp" } } or nil })
end

-- A client loop in the background: one request after another until the
-- stop file appears, one line per answer: curl's exit code, status,
-- request id, backend, stamp, whether the body was whole, kind.
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
  echo "$rc ${st:--} $(h x-request-id) $(h x-sluice-backend) $(h x-stamp) $ok $kind" >> $out
  rm -f $t.h $t.b
done
echo end >> $out
]]

describe("publishing under load", function()
  local mock_a, mock_b

  setup(function()
    mock_a = proc.mock()
    mock_b = proc.mock()
  end)

  teardown(function()
    proc.stop_all()
  end)

  it("serves every request whole, each by exactly one of 100 versions published meanwhile", function()
    local g = admin_gateway(version_policy(mock_a, mock_b, 0, true))
    -- the starting version: stamp plugin "0"
    local res, j = call(g, "POST", "/admin/publish",
      { files = { ["policies/default.yaml"] = proc.yaml(version_policy(mock_a, mock_b, 0)),
                  ["plugins/stamp.lua"] = stamp_plugin("0") } })
    assert.are.equal(200, res.status, res.body)
    local versions = { [j.version] = { stamp = "0", backend = "a" } }

    local script = proc.write_file(g.dir .. "/loop.sh", LOOP)
    local stop = g.dir .. "/STOP"
    local outs = {}
    for k, kind in ipairs({ "plain", "stream", "plain", "stream" }) do
      outs[k] = g.dir .. "/load-" .. k .. ".txt"
      os.execute(("sh %s %d %s %s %s >/dev/null 2>&1 &"):format(proc.quote(script), g.port, kind,
        proc.quote(outs[k]), proc.quote(stop)))
    end
    proc.sleep(0.3)

    for i = 1, 100 do
      local p = version_policy(mock_a, mock_b, i)
      res, j = call(g, "POST", "/admin/publish",
        { files = { ["policies/default.yaml"] = proc.yaml(p), ["plugins/stamp.lua"] = stamp_plugin(tostring(i)) } })
      assert.are.equal(200, res.status, res.body)
      versions[j.version] = { stamp = tostring(i), backend = p.default_backend }
      proc.sleep(0.01)
    end
    proc.sleep(0.3)
    proc.write_file(stop, "")
    local deadline = proc.now() + 20
    for _, f in ipairs(outs) do
      while not (proc.read_file(f) or ""):find("end\n", 1, true) and proc.now() < deadline do
        proc.sleep(0.05)
      end
    end
    assert.are.equal(0, proc.stop(g.proc))

    -- the access log names the version that served each request
    local served_by = {}
    for line in (proc.read_file(g.dir .. "/access.log") or ""):gmatch("[^\n]+") do
      local rec = json.decode(line)
      if rec and rec.request_id then served_by[rec.request_id] = rec.policy_version end
    end
    local total, seen, kinds = 0, {}, {}
    for _, f in ipairs(outs) do
      for line in (proc.read_file(f) or ""):gmatch("[^\n]+") do
        if line ~= "end" then
          local rc, st, rid, be, stamp, ok, kind = line:match("^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$")
          assert.is_truthy(rc, "unreadable load line (a request failed?): " .. line
            .. "\n" .. (proc.read_file(f .. ".err") or ""))
          assert.are.equal("0", rc, "curl failed: " .. line .. "\n" .. (proc.read_file(f .. ".err") or ""))
          assert.are.equal("200", st, line)
          assert.are.equal("1", ok, "truncated answer: " .. line)
          local v = served_by[rid]
          assert.is_truthy(v, "no access-log record for " .. rid)
          local want = versions[v]
          assert.is_truthy(want, "served by an unknown version " .. tostring(v))
          assert.are.same({ stamp = want.stamp, backend = want.backend }, { stamp = stamp, backend = be },
            "request " .. rid .. " mixed versions")
          total = total + 1
          seen[v] = true
          kinds[kind] = (kinds[kind] or 0) + 1
        end
      end
    end
    local nseen = 0
    for _ in pairs(seen) do nseen = nseen + 1 end
    if os.getenv("SPEC_DEBUG") then
      io.stderr:write(("load: %d requests (%d streamed), %d versions served\n"):format(
        total, kinds.stream or 0, nseen))
    end
    assert.is_true(total >= 100, "only " .. total .. " requests ran")
    assert.is_true(kinds.stream > 20 and kinds.plain > 20)
    assert.is_true(nseen >= 10, "the load saw only " .. nseen .. " versions")
  end)

  it("rolls a version one worker refuses back on every worker and reports it", function()
    -- init fails on the third compile only: validation (1), worker (2),
    -- worker (3). Validation passes, one worker refuses.
    local flaky = [[
return {
  name = "flaky",
  schema = { tag = { type = "string", required = true } },
  init = function(conf)
    if sluice.shared.incr("flaky:" .. conf.tag, 1, 0) == 3 then error("refused in this worker") end
  end,
  access = function(ctx, conf) ctx:set_response_header("x-flaky", conf.tag) end,
}
]]
    local g = admin_gateway(version_policy(mock_a, mock_b, 0, true))
    local _, st = call(g, "GET", "/admin/status")
    local before = st.version
    local p = version_policy(mock_a, mock_b, 1)
    p.plugins = { { name = "flaky", config = { tag = "t1" } } }
    local res, j = call(g, "POST", "/admin/publish",
      { files = { ["policies/default.yaml"] = proc.yaml(p), ["plugins/flaky.lua"] = flaky } })
    assert.are.equal(500, res.status, res.body)
    assert.are.equal("publish_failed", j.error.code)
    assert.is_truthy(j.error.message:find("refused in this worker", 1, true), j.error.message)
    _, st = call(g, "GET", "/admin/status")
    assert.are.equal(before, st.version)
    -- every worker serves the old version: new connections land on both
    for _ = 1, 30 do
      local r = assert(http.chat(g.port))
      assert.are.equal(200, r.status)
      assert.is_nil(r.headers["x-flaky"])
      assert.are.equal("a", r.headers["x-sluice-backend"])
    end
    local audit = proc.read_file(g.dir .. "/state/admin-audit.log")
    assert.is_truthy(audit:find('"action":"publish","result":"failed"', 1, true), audit)
    assert.is_truthy(g:log():find("rolling the other workers back", 1, true), g:log())
    -- and the history still names the old version for a restart
    _, j = call(g, "GET", "/admin/versions")
    assert.are.equal(before, j.history[1])
    proc.stop(g.proc)
  end)

  it("stores and audits a SIGHUP reload like any publish", function()
    local g = admin_gateway(version_policy(mock_a, mock_b, 0, true))
    if proc.wrapped then proc.sleep(2) else proc.sleep(0.1) end
    g:write_policy(version_policy(mock_a, mock_b, 1, true))
    g:signal("HUP")
    local deadline, got = proc.now() + 5 * proc.slow
    repeat
      got = assert(http.chat(g.port)).headers["x-sluice-backend"]
      if got ~= "b" then proc.sleep(0.05) end
    until got == "b" or proc.now() > deadline
    assert.are.equal("b", got)
    local _, st = call(g, "GET", "/admin/status")
    local _, v = call(g, "GET", "/admin/versions")
    assert.are.equal(st.version, v.history[1])
    local audit = proc.read_file(g.dir .. "/state/admin-audit.log")
    assert.is_truthy(audit:find('"actor":"signal:SIGHUP","client":null,"action":"reload","result":"ok"', 1, true), audit)
    proc.stop(g.proc)
  end)
end)
