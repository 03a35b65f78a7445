-- End-to-end: signals. SIGTERM drains in-flight requests, refuses new
-- connections and exits 0; SIGHUP reloads the policy without a restart and
-- keeps the live one when the new one is invalid.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"

local function slow_chat(port, delay_ms, extra_headers)
  local c = assert(http.connect(port))
  local h = { ["x-mock-delay-ms"] = tostring(delay_ms) }
  for k, v in pairs(extra_headers or {}) do h[k] = v end
  assert(c:send(http.request_bytes({ method = "POST", path = "/v1/chat/completions",
    headers = h, body = http.chat_body() })))
  return c
end

describe("sluice on SIGTERM", function()
  local mock

  setup(function()
    mock = proc.mock()
  end)

  teardown(function()
    proc.stop_all()
  end)

  it("finishes an in-flight request, refuses new connections, and exits 0", function()
    local gw = proc.gateway({ backend_url = mock.url, config = { timeouts = { drain = "5s" } } })
    local c = slow_chat(gw.port, 1000)
    proc.sleep(0.2)                -- the request is at the backend now
    gw:signal("TERM")
    proc.sleep(0.2)
    local refused = not proc.port_open(gw.port)
    local res, err = c:read_response({ timeout = 5 })
    c:close()
    local st = proc.wait(gw.proc, 5 * proc.slow)
    assert.is_truthy(res, "the in-flight request got no answer: " .. tostring(err))
    assert.are.equal(200, res.status)
    assert.are.equal("chatcmpl-mock", http.json(res.body).id)
    assert.are.equal("close", (res.headers["connection"] or ""):lower())
    assert.is_true(refused, "new connections were still accepted while draining")
    assert.are.equal(0, st, "exit status; log:\n" .. gw:log())
    proc.stop(gw.proc)
  end)

  it("finishes an in-flight stream to its [DONE] while draining", function()
    local gw = proc.gateway({ backend_url = mock.url, config = { timeouts = { drain = "5s" } } })
    local c = assert(http.connect(gw.port))
    assert(c:send(http.request_bytes({ method = "POST", path = "/v1/chat/completions",
      headers = { ["x-mock-chunk-delay-ms"] = "100", ["x-mock-chunks"] = "8" },
      body = http.chat_body('"stream":true') })))
    local res = assert(c:read_head())
    gw:signal("TERM")
    local events = c:read_sse(res, { timeout = 5 })
    c:close()
    assert.is_true(res.complete)
    assert.are.equal("[DONE]", events[#events].data)
    assert.are.equal(0, proc.wait(gw.proc, 5 * proc.slow))
    proc.stop(gw.proc)
  end)

  it("exits 0 at once when idle", function()
    local gw = proc.gateway({ backend_url = mock.url })
    assert.are.equal(200, http.chat(gw.port).status)
    local t0 = proc.now()
    assert.are.equal(0, proc.stop(gw.proc))
    assert.is_true(proc.now() - t0 < 1 * proc.slow)
  end)

  it("exits 0 after it closed a client connection itself (Connection: close)", function()
    local gw = proc.gateway({ backend_url = mock.url, config = { timeouts = { drain = "1s" } } })
    local res = assert(http.request(gw.port, { path = "/mock/echo", close = true,
      check_closed = true }))
    assert.are.equal(200, res.status)
    assert.is_true(res.closed)
    proc.sleep(0.3)
    gw:signal("TERM")
    local st = proc.wait(gw.proc, 3 * proc.slow)
    proc.stop(gw.proc)
    assert.are.equal(0, st, "did not exit after SIGTERM; log:\n" .. gw:log())
  end)

  it("exits 0 after it refused a malformed request", function()
    local gw = proc.gateway({ backend_url = mock.url, config = { timeouts = { drain = "1s" } } })
    local c = assert(http.connect(gw.port))
    c:send("GET / HTTP/1.1\r\n\r\n") -- no Host
    local res = assert(c:read_response())
    c:close()
    assert.are.equal(400, res.status)
    proc.sleep(0.3)
    gw:signal("TERM")
    local st = proc.wait(gw.proc, 3 * proc.slow)
    proc.stop(gw.proc)
    assert.are.equal(0, st, "did not exit after SIGTERM; log:\n" .. gw:log())
  end)

  it("gives up on a request that outlives the drain timeout and exits", function()
    local gw = proc.gateway({ backend_url = mock.url,
      config = { timeouts = { drain = "1s", upstream_first_byte = "30s" } } })
    local c = assert(http.connect(gw.port))
    assert(c:send(http.request_bytes({ method = "POST", path = "/v1/chat/completions",
      headers = { ["x-mock-fault"] = "hang" }, body = http.chat_body() })))
    proc.sleep(0.2)
    local t0 = proc.now()
    gw:signal("TERM")
    local st = proc.wait(gw.proc, 4 * proc.slow)
    local dt = proc.now() - t0
    local closed = c:closed(1)
    c:close()
    proc.stop(gw.proc)
    assert.are.equal(0, st, "did not exit after the drain timeout; log:\n" .. gw:log())
    assert.is_true(dt >= 0.9, string.format("exited after %.3fs, before the drain timeout", dt))
    assert.is_true(closed)
  end)
end)

describe("sluice on SIGHUP", function()
  local mock_a, mock_b, gw

  local function two_backends(default)
    return {
      backends = {
        a = { provider = "openai", url = mock_a.url, region = "local" },
        b = { provider = "openai", url = mock_b.url, region = "local" },
      },
      default_backend = default,
    }
  end

  local function backend_of_next_request()
    local res = assert(http.chat(gw.port))
    assert.are.equal(200, res.status, res.body)
    return res.headers["x-sluice-backend"]
  end

  -- Poll until a request is served by `name` (reload is asynchronous).
  local function wait_backend(name, timeout)
    local deadline = proc.now() + (timeout or 2) * proc.slow
    local got
    repeat
      got = backend_of_next_request()
      if got == name then return got end
      proc.sleep(0.05)
    until proc.now() > deadline
    return got
  end

  setup(function()
    mock_a = proc.mock()
    mock_b = proc.mock()
  end)

  before_each(function()
    gw = proc.gateway({ policy = two_backends("a"), config = { log = { level = "info" } } })
    -- sluice installs its signal handlers only after the listeners are up
    -- (see "survives a SIGHUP sent as soon as it accepts connections");
    -- give it that moment so these specs test reloading, not that race.
    assert.are.equal("a", backend_of_next_request())
    if proc.wrapped then proc.sleep(2) else proc.sleep(0.1) end
  end)

  after_each(function()
    local pid = gw.proc.pid
    assert.is_true(proc.alive(gw.proc), "sluice exited:\n" .. gw:log())
    local st = proc.stop(gw.proc)
    assert.are.equal(0, st, "sluice " .. pid .. " exit status")
  end)

  teardown(function()
    proc.stop_all()
  end)

  it("sends new requests to the backend the reloaded policy names", function()
    assert.are.equal("a", backend_of_next_request())
    gw:write_policy(two_backends("b"))
    gw:signal("HUP")
    assert.are.equal("b", wait_backend("b"))
    -- and they really reach mock b
    local echo = assert(http.request(gw.port, { path = "/mock/echo" }))
    assert.are.same({ "127.0.0.1:" .. mock_b.port }, http.echo_headers(echo)["host"])
  end)

  it("finishes a request in flight during the reload on the old backend", function()
    local c = slow_chat(gw.port, 600)
    proc.sleep(0.1)
    gw:write_policy(two_backends("b"))
    gw:signal("HUP")
    assert.are.equal("b", wait_backend("b"))
    local res = assert(c:read_response({ timeout = 5 }))
    c:close()
    assert.are.equal(200, res.status)
    assert.are.equal("a", res.headers["x-sluice-backend"])
  end)

  it("keeps the live policy when the new one is invalid", function()
    assert.are.equal("a", backend_of_next_request())
    gw:write_policy("backends:\n  b:\n    url: nowhere\ndefault_backend: b\n")
    gw:signal("HUP")
    proc.sleep(0.3 * proc.slow)
    for _ = 1, 5 do
      assert.are.equal("a", backend_of_next_request())
    end
    local log = gw:log()
    assert.is_truthy(log:find("reload refused", 1, true), log)
    assert.is_truthy(log:find("backends.b.url", 1, true), log)
  end)

  it("applies a valid policy after an invalid one was refused", function()
    assert.are.equal("a", backend_of_next_request())
    gw:write_policy("backends: [oops\n")
    gw:signal("HUP")
    proc.sleep(0.2 * proc.slow)
    assert.are.equal("a", backend_of_next_request())
    gw:write_policy(two_backends("b"))
    gw:signal("HUP")
    assert.are.equal("b", wait_backend("b"))
  end)

  it("survives a SIGHUP sent as soon as it accepts connections", function()
    for _ = 1, 5 do
      local g = proc.gateway({ policy = two_backends("a") })
      g:signal("HUP")
      proc.sleep(0.2 * proc.slow)
      local alive = proc.alive(g.proc)
      local st = proc.stop(g.proc)
      assert.is_true(alive, "killed by SIGHUP (exit " .. tostring(st) .. ")")
      assert.are.equal(0, st)
    end
  end)

  it("keeps client keep-alive connections across a reload", function()
    local c = assert(http.connect(gw.port))
    assert(c:send(http.request_bytes({ method = "POST", path = "/v1/chat/completions",
      body = http.chat_body() })))
    local r1 = assert(c:read_response())
    assert.are.equal("a", r1.headers["x-sluice-backend"])
    gw:write_policy(two_backends("b"))
    gw:signal("HUP")
    wait_backend("b")
    assert(c:send(http.request_bytes({ method = "POST", path = "/v1/chat/completions",
      body = http.chat_body() })))
    local r2 = assert(c:read_response())
    c:close()
    assert.are.equal(200, r2.status)
    assert.are.equal("b", r2.headers["x-sluice-backend"])
  end)
end)

-- Workers listen with SO_REUSEPORT, which would let another process of the
-- same user join the port and take a share of its connections unseen.
describe("sluice on a port another process listens on", function()
  local socket = require "socket"
  teardown(function() proc.stop_all() end)

  -- Start a gateway on `port`; its exit status and log once it has ended.
  local function refused_on(port)
    local g = proc.gateway({ backend_url = "http://127.0.0.1:1", port = port, no_wait = true })
    local st = proc.wait(g.proc, 10 * proc.slow)
    assert.is_truthy(st, "the second gateway kept running")
    return st, g:log()
  end

  it("refuses to start beside a running sluice, which keeps every connection", function()
    local first = proc.gateway({ backend_url = proc.mock().url, config = { workers = 2 } })
    local st, log = refused_on(first.port)
    assert.are_not.equal(0, st)
    assert.is_truthy(log:find(("listen 127.0.0.1:%d: address already in use: another process "
      .. "listens on port %d"):format(first.port, first.port), 1, true), log)
    for _ = 1, 40 do -- new connections, each answered by the first gateway
      local res = assert(http.chat(first.port))
      assert.are.equal(200, res.status)
      assert.are.equal("mock", res.headers["x-sluice-backend"])
    end
    assert.is_true(proc.listens(first.proc.pid, first.port))
  end)

  it("refuses a port held by a program without SO_REUSEPORT", function()
    local port = proc.free_port()
    local holder = assert(socket.bind("127.0.0.1", port))
    local st, log = refused_on(port)
    holder:close()
    assert.are_not.equal(0, st)
    assert.is_truthy(log:find(("listen 127.0.0.1:%d: Address already in use"):format(port), 1, true), log)
  end)
end)
