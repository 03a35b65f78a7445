-- End-to-end: a gateway killed with SIGKILL in the middle of a publish
-- starts again cleanly on either the version that was live or the one being
-- published, never a mix of the two: its state directory holds only whole
-- versions, and what it serves matches the version it reports.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"
local admin = require "spec.helpers.admin"
local json = require "sluice.json"
local hash = require "sluice.hash"

local TOKEN = "tok-root-2b9d41c0"

local function start(dir, port, aport, policy)
  return admin.gateway({ dir = dir, port = port, aport = aport, policy = policy }, function(d)
    return {
      workers = 2,
      lua = { time_budget = "3s" },
      admin = { listen = "127.0.0.1:" .. aport, state_dir = d .. "/state",
                tokens = { { name = "root", sha256 = hash.sha256(TOKEN), roles = { "admin" } } } },
    }
  end)
end

local function request_bytes(method, path, body)
  return http.request_bytes({ method = method, path = path, body = body,
    headers = { authorization = "Bearer " .. TOKEN } })
end

local function call(g, method, path, body)
  return admin.call(g, TOKEN, method, path, body)
end

-- Version `tag`: routes to backend `be`; its plugin's init takes a while
-- (so a publish spans a few hundred ms: validation, then each worker) and
-- stamps every answer with the tag.
local function bundle(mock_a, mock_b, tag, be)
  local policy = admin.two_backends(mock_a, mock_b, be, { plugins = { { name = "slow" } } })
  local code = ([[
-- %s
return {
  name = "slow",
  init = function() local t = os.clock() + 0.12; while os.clock() < t do end end,
  access = function(ctx) ctx:set_response_header("x-stamp", "%s") end,
}
]]):format(tag, tag)
  return json.encode({ files = { ["policies/default.yaml"] = proc.yaml(policy),
                                 ["plugins/slow.lua"] = code } })
end

describe("kill -9 during a publish", function()
  local mock_a, mock_b

  setup(function()
    mock_a = proc.mock()
    mock_b = proc.mock()
  end)

  teardown(function()
    proc.stop_all()
  end)

  it("restarts on the old or the new version, whole, whatever the moment", function()
    local dir, port, aport = proc.tmpdir(), proc.free_port(), proc.free_port()
    local initial = {
      backends = { a = { provider = "openai", url = mock_a.url, region = "local" } },
      default_backend = "a",
    }
    local g = start(dir, port, aport, initial)
    local res, j = call(g, "POST", "/admin/publish", bundle(mock_a, mock_b, "v0", "a"))
    assert.are.equal(200, res.status, res.body)
    local live = { version = j.version, stamp = "v0", backend = "a" }
    local outcomes = {}
    for round, delay in ipairs({ 0.02, 0.12, 0.25, 0.4, 0.6 }) do
      local tag = "v" .. round
      local be = round % 2 == 1 and "b" or "a"
      local c = assert(http.connect(aport))
      assert(c:send(request_bytes("POST", "/admin/publish", bundle(mock_a, mock_b, tag, be))))
      proc.sleep(delay * proc.slow)
      g:signal("KILL")
      proc.wait(g.proc, 5)
      c:close()

      g = start(dir, port, aport, initial)
      local _, st = call(g, "GET", "/admin/status")
      local chat = assert(http.chat(port))
      assert.are.equal(200, chat.status, chat.body)
      local now = { stamp = chat.headers["x-stamp"], backend = chat.headers["x-sluice-backend"] }
      if st.version == live.version then
        assert.are.same({ stamp = live.stamp, backend = live.backend }, now)
        outcomes[#outcomes + 1] = "old"
      else
        -- the new version, and all of it: its routing and its plugin
        assert.are.same({ stamp = tag, backend = be }, now)
        live = { version = st.version, stamp = tag, backend = be }
        outcomes[#outcomes + 1] = "new"
      end
      -- nothing half-written survives a restart
      local st2, out = proc.run("ls -A " .. proc.quote(dir .. "/state/tmp"))
      assert.are.equal(0, st2)
      assert.are.equal("", out)
      local _, versions = call(g, "GET", "/admin/versions")
      assert.are.equal(live.version, versions.history[1])
    end
    if os.getenv("SPEC_DEBUG") then io.stderr:write("outcomes: " .. table.concat(outcomes, ",") .. "\n") end
    -- a publish that finished before the kill must have come back as new
    assert.are.equal("new", outcomes[#outcomes], table.concat(outcomes, ","))
    proc.stop(g.proc)
  end)

  it("drains and exits 0 on SIGTERM in the middle of a publish", function()
    local dir, port, aport = proc.tmpdir(), proc.free_port(), proc.free_port()
    local g = start(dir, port, aport, {
      backends = { a = { provider = "openai", url = mock_a.url, region = "local" } },
      default_backend = "a",
    })
    local c = assert(http.connect(aport))
    assert(c:send(request_bytes("POST", "/admin/publish", bundle(mock_a, mock_b, "t", "b"))))
    proc.sleep(0.15)
    local st = proc.stop(g.proc)
    c:close()
    assert.are.equal(0, st, g:log())
  end)
end)
