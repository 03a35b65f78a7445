-- End-to-end: a backend that is down, slow, broken or rude turns into a
-- clear gateway error (or an honest truncation once the answer has
-- started), the backend's own errors pass through as they are, and sluice
-- keeps serving afterwards.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"

describe("sluice upstream faults", function()
  local mock, gw, down_gw

  setup(function()
    mock = proc.mock()
    gw = proc.gateway({
      backend_url = mock.url,
      config = { timeouts = { upstream_first_byte = "500ms", upstream_idle = "1s",
        upstream_connect = "1s" } },
    })
    -- a backend nobody listens on
    down_gw = proc.gateway({ backend_url = "http://127.0.0.1:" .. proc.free_port() })
  end)

  teardown(function()
    proc.stop_all()
  end)

  -- sluice must never crash: after every spec a normal request succeeds.
  after_each(function()
    assert.is_true(proc.alive(gw.proc), "sluice exited:\n" .. gw:log())
    local res = assert(http.chat(gw.port))
    assert.are.equal(200, res.status)
    assert.are.equal("chatcmpl-mock", http.json(res.body).id)
  end)

  local function gateway_error(res, status, code)
    assert.is_truthy(res)
    assert.are.equal(status, res.status, tostring(res.body))
    assert.are.equal("application/json", res.headers["content-type"])
    local e = http.error_of(res)
    assert(e, "not an OpenAI error: " .. tostring(res.body))
    assert.are.equal("upstream_error", e.type)
    if code then assert.are.equal(code, e.code) end
    assert.are.equal("string", type(e.message))
    assert.is_truthy(res.headers["x-request-id"])
    return e
  end

  it("answers 502 upstream_connect_error when nothing listens at the backend", function()
    local res = assert(http.chat(down_gw.port))
    gateway_error(res, 502, "upstream_connect_error")
    assert.is_true(proc.alive(down_gw.proc))
    local again = assert(http.chat(down_gw.port))
    gateway_error(again, 502, "upstream_connect_error")
  end)

  it("answers 502 upstream_protocol_error when the backend sends garbage", function()
    local res = assert(http.chat(gw.port, { ["x-mock-fault"] = "garbage" }))
    gateway_error(res, 502, "upstream_protocol_error")
  end)

  it("delivers a close-delimited answer whole (the body ends with the connection)", function()
    local res = assert(http.chat(gw.port, { ["x-mock-fault"] = "close-delimited" }))
    assert.are.equal(200, res.status)
    assert.is_true(res.complete ~= false, "the answer was cut off")
    assert.matches('"content":"until close"', res.body, 1, true)
    assert.matches("}]}$", res.body)
  end)

  it("keeps the backend's content-length on a HEAD answer", function()
    local get = assert(http.request(gw.port, { method = "GET", path = "/v1/models" }))
    local head = assert(http.request(gw.port, { method = "HEAD", path = "/v1/models" }))
    assert.are.equal(200, head.status)
    assert.are.equal(tostring(#get.body), head.headers["content-length"])
    assert.are.equal("", head.body or "")
  end)

  it("answers 502 upstream_reset when the backend resets the connection before answering", function()
    local res = assert(http.chat(gw.port, { ["x-mock-fault"] = "reset" }))
    gateway_error(res, 502, "upstream_reset")
  end)

  it("answers 504 upstream_timeout when the backend sends no head within upstream_first_byte", function()
    local t0 = proc.now()
    local res = assert(http.chat(gw.port, { ["x-mock-fault"] = "hang" }, nil, { timeout = 10 }))
    local dt = proc.now() - t0
    gateway_error(res, 504, "upstream_timeout")
    assert.is_true(dt >= 0.4, string.format("504 after %.3fs", dt))
    assert.is_true(dt < 3 * proc.slow, string.format("504 after %.3fs", dt))
  end)

  it("waits for a slow backend that answers within upstream_first_byte", function()
    local res = assert(http.chat(gw.port, { ["x-mock-delay-ms"] = "200" }))
    assert.are.equal(200, res.status)
  end)

  it("passes the backend's 429 through with its body and Retry-After", function()
    local res = assert(http.chat(gw.port, { ["x-mock-status"] = "429",
      ["x-mock-retry-after"] = "2" }))
    assert.are.equal(429, res.status)
    assert.are.equal('{"error":{"message":"mock error 429","type":"rate_limit_error","code":"mock_429"}}',
      res.body)
    assert.are.equal("2", res.headers["retry-after"])
    assert.are.equal("mock", res.headers["x-sluice-backend"])
  end)

  it("passes the backend's 503 through as the backend's answer", function()
    local res = assert(http.chat(gw.port, { ["x-mock-status"] = "503" }))
    assert.are.equal(503, res.status)
    assert.are.equal("mock_503", http.error_of(res).code)
    assert.are.equal("server_error", http.error_of(res).type)
  end)

  it("passes a well-framed but malformed JSON body through unchanged", function()
    local res = assert(http.chat(gw.port, { ["x-mock-fault"] = "garbage-body" }))
    assert.are.equal(200, res.status)
    assert.are.equal('{"id": "chatcmpl-mock", "choices": [tru', res.body)
  end)

  it("truncates the client's stream when the backend resets mid-stream", function()
    local c = assert(http.connect(gw.port))
    local t0 = proc.now()
    assert(c:send(http.request_bytes({ method = "POST", path = "/v1/chat/completions",
      headers = { ["x-mock-fault"] = "reset-mid-stream", ["x-mock-chunk-delay-ms"] = "50" },
      body = http.chat_body('"stream":true') })))
    local res = assert(c:read_head())
    assert.are.equal(200, res.status)
    local events = c:read_sse(res, { timeout = 5 })
    local closed = c:closed(1)
    c:close()
    assert.is_false(res.complete, "the stream ended cleanly after a backend reset")
    assert.are.equal("closed", res.err)
    assert.is_true(closed)
    assert.is_true(#events >= 1)
    for _, ev in ipairs(events) do assert.are_not.equal("[DONE]", ev.data) end
    assert.is_true(proc.now() - t0 < 4 * proc.slow, "took too long: a hang?")
  end)

  it("truncates the client's stream when the backend stalls mid-stream past upstream_idle", function()
    local c = assert(http.connect(gw.port))
    local t0 = proc.now()
    assert(c:send(http.request_bytes({ method = "POST", path = "/v1/chat/completions",
      headers = { ["x-mock-chunk-delay-ms"] = "3000", ["x-mock-chunks"] = "3" },
      body = http.chat_body('"stream":true') })))
    local res = assert(c:read_head())
    assert.are.equal(200, res.status)
    c:read_sse(res, { timeout = 6 })
    c:close()
    local dt = proc.now() - t0
    assert.is_false(res.complete)
    assert.are.equal("closed", res.err)
    assert.is_true(dt >= 0.9 and dt < 2.9 * proc.slow, string.format("closed after %.3fs", dt))
  end)

  it("keeps serving when the client disconnects mid-stream", function()
    local c = assert(http.connect(gw.port))
    assert(c:send(http.request_bytes({ method = "POST", path = "/v1/chat/completions",
      headers = { ["x-mock-chunk-delay-ms"] = "100", ["x-mock-chunks"] = "20" },
      body = http.chat_body('"stream":true') })))
    local res = assert(c:read_head())
    assert.are.equal(200, res.status)
    assert.is_true(c:fill(2)) -- the first event
    c:close()
    proc.sleep(0.3)
    -- several requests, so that a broken pooled connection would show
    for _ = 1, 3 do
      local r = assert(http.chat(gw.port))
      assert.are.equal(200, r.status)
    end
  end)

  it("keeps serving when the client disconnects while the backend is slow", function()
    local c = assert(http.connect(gw.port))
    assert(c:send(http.request_bytes({ method = "POST", path = "/v1/chat/completions",
      headers = { ["x-mock-delay-ms"] = "300" }, body = http.chat_body() })))
    proc.sleep(0.05)
    c:close()
    proc.sleep(0.4)
    local r = assert(http.chat(gw.port))
    assert.are.equal(200, r.status)
  end)
end)
