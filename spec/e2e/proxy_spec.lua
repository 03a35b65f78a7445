-- End-to-end: requests pass through sluice to a real mock provider —
-- answers, correlation ids, streaming without buffering, connection reuse
-- on both sides, and which headers cross the proxy.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"

local function hex32(s)
  return type(s) == "string" and #s == 32 and s:match("^%x+$") ~= nil
end

describe("sluice passthrough", function()
  local mock, gw

  setup(function()
    mock = proc.mock()
    gw = proc.gateway({ backend_url = mock.url })
  end)

  teardown(function()
    proc.stop_all()
  end)

  it("returns the backend's chat completion unchanged", function()
    local res = assert(http.chat(gw.port))
    assert.are.equal(200, res.status)
    assert.are.equal("application/json", res.headers["content-type"])
    local j = assert(http.json(res.body))
    assert.are.equal("chatcmpl-mock", j.id)
    assert.are.equal("chat.completion", j.object)
    assert.are.equal("mock-model", j.model)
    assert.are.equal("Hello from the sluice mock provider.",
      j.choices[1].message.content)
    assert.are.equal(7, j.usage.completion_tokens)
    assert.are.equal(tostring(#res.body), res.headers["content-length"])
  end)

  it("names the serving backend in x-sluice-backend", function()
    local res = assert(http.chat(gw.port))
    assert.are.equal(200, res.status)
    assert.are.equal("mock", res.headers["x-sluice-backend"])
  end)

  it("generates a 32-hex-digit x-request-id when the client sends none", function()
    local a = assert(http.chat(gw.port))
    local b = assert(http.chat(gw.port))
    assert.is_true(hex32(a.headers["x-request-id"]),
      "x-request-id: " .. tostring(a.headers["x-request-id"]))
    assert.is_true(hex32(b.headers["x-request-id"]))
    assert.are_not.equal(a.headers["x-request-id"], b.headers["x-request-id"])
    -- exactly one x-request-id, not the backend's and the gateway's
    local n = 0
    for _, h in ipairs(a.header_list) do
      if h[1] == "x-request-id" then n = n + 1 end
    end
    assert.are.equal(1, n)
  end)

  it("keeps the client's x-request-id and forwards it to the backend", function()
    local res = assert(http.chat(gw.port, { ["x-request-id"] = "client-id-42" }))
    assert.are.equal(200, res.status)
    assert.are.equal("client-id-42", res.headers["x-request-id"])
    local echo = assert(http.request(gw.port, { path = "/mock/echo",
      headers = { ["x-request-id"] = "client-id-43" } }))
    assert.are.equal(200, echo.status)
    local hs = http.echo_headers(echo)
    assert.are.same({ "client-id-43" }, hs["x-request-id"])
  end)

  it("passes a path the backend does not know through as the backend's 404", function()
    local res = assert(http.request(gw.port, { path = "/no/such/path" }))
    assert.are.equal(404, res.status)
    local e = assert(http.error_of(res))
    assert.are.equal("not_found", e.code)
    assert.are.equal("mock", res.headers["x-sluice-backend"])
  end)

  it("streams SSE events to the client as the backend produces them", function()
    local c = assert(http.connect(gw.port))
    local t0 = proc.now()
    assert(c:send(http.request_bytes({ method = "POST", path = "/v1/chat/completions",
      headers = { ["content-type"] = "application/json",
        ["x-mock-chunk-delay-ms"] = "200", ["x-mock-chunks"] = "5" },
      body = http.chat_body('"stream":true') })))
    local res = assert(c:read_head())
    assert.are.equal(200, res.status)
    assert.are.equal("text/event-stream", res.headers["content-type"])
    assert.are.equal("mock", res.headers["x-sluice-backend"])
    local events = c:read_sse(res, { timeout = 10 })
    c:close()
    assert.is_true(res.complete, "the stream ended without its terminating chunk")
    -- role event + 5 content events + the stop event + [DONE]
    assert.are.equal(8, #events)
    assert.are.equal("[DONE]", events[#events].data)
    local first, last = events[1].t - t0, events[#events].t - t0
    local first_limit = proc.wrapped and 0.6 or 0.15
    assert.is_true(first < first_limit,
      string.format("first event after %.3fs (limit %.2fs)", first, first_limit))
    assert.is_true(last >= 0.9, string.format("last event after %.3fs", last))
    assert.is_true(last - first >= 0.7,
      string.format("events bunched: first %.3fs, last %.3fs", first, last))
  end)

  it("ends a stream with data: [DONE] after the finish event", function()
    local c = assert(http.connect(gw.port))
    assert(c:send(http.request_bytes({ method = "POST", path = "/v1/chat/completions",
      headers = { ["x-mock-chunks"] = "3" }, body = http.chat_body('"stream":true') })))
    local res = assert(c:read_head())
    assert.are.equal(200, res.status)
    assert.are.equal("chunked", res.headers["transfer-encoding"])
    local events = c:read_sse(res)
    c:close()
    assert.is_true(res.complete)
    assert.are.equal(6, #events)
    local stop = assert(http.json(events[5].data))
    assert.are.equal("stop", stop.choices[1].finish_reason)
    assert.are.equal("[DONE]", events[6].data)
  end)

  it("serves three requests in a row on one client connection", function()
    local c = assert(http.connect(gw.port))
    local ids = {}
    for i = 1, 3 do
      assert(c:send(http.request_bytes({ method = "POST", path = "/v1/chat/completions",
        headers = { ["x-request-id"] = "ka-" .. i }, body = http.chat_body() })))
      local res = assert(c:read_response())
      assert.are.equal(200, res.status)
      assert.is_true(res.complete)
      assert.is_nil(res.headers["connection"] and
        res.headers["connection"]:lower():find("close") or nil)
      ids[#ids + 1] = res.headers["x-request-id"]
    end
    assert.is_false(c:closed(0.2))
    c:close()
    assert.are.same({ "ka-1", "ka-2", "ka-3" }, ids)
  end)

  it("answers two pipelined requests in order on the same connection", function()
    local c = assert(http.connect(gw.port))
    -- the first is slow: an out-of-order server would answer the second first
    local a = http.request_bytes({ method = "POST", path = "/v1/chat/completions",
      headers = { ["x-request-id"] = "pipe-1", ["x-mock-delay-ms"] = "300" },
      body = http.chat_body() })
    local b = http.request_bytes({ method = "GET", path = "/mock/echo",
      headers = { ["x-request-id"] = "pipe-2" } })
    assert(c:send(a .. b))
    local r1 = assert(c:read_response())
    local r2 = assert(c:read_response())
    c:close()
    assert.are.equal(200, r1.status)
    assert.are.equal("pipe-1", r1.headers["x-request-id"])
    assert.is_truthy(r1.body:find("chatcmpl-mock", 1, true))
    assert.are.equal(200, r2.status)
    assert.are.equal("pipe-2", r2.headers["x-request-id"])
    assert.are.equal("GET", http.json(r2.body).method)
  end)

  it("closes the client connection after a request with Connection: close", function()
    local res = assert(http.request(gw.port, { path = "/mock/echo", close = true,
      check_closed = true }))
    assert.are.equal(200, res.status)
    assert.is_true(res.closed)
  end)
end)

describe("sluice upstream keep-alive", function()
  local mock, gw

  setup(function()
    mock = proc.mock()
    gw = proc.gateway({ backend_url = mock.url, config = { workers = 1 } })
  end)

  teardown(function()
    proc.stop_all()
  end)

  it("reuses pooled backend connections across 20 client requests", function()
    for i = 1, 20 do
      local res = assert(http.chat(gw.port))
      assert.are.equal(200, res.status, "request " .. i)
    end
    local st = http.mock_stats(mock.port)
    -- the stats request itself is one request on one new connection
    assert.is_true(st.requests >= 21, "requests: " .. tostring(st.requests))
    assert.is_true(st.connections - 1 <= 2,
      "backend connections opened by sluice: " .. tostring(st.connections - 1))
    assert.is_true(st.connections - 1 >= 1)
  end)
end)

describe("sluice request header hygiene", function()
  local mock, gw

  setup(function()
    mock = proc.mock()
    gw = proc.gateway({ backend_url = mock.url })
  end)

  teardown(function()
    proc.stop_all()
  end)

  local function echo(headers, extra)
    local opts = { path = "/mock/echo", headers = headers }
    for k, v in pairs(extra or {}) do opts[k] = v end
    local res = assert(http.request(gw.port, opts))
    assert.are.equal(200, res.status, res.body)
    return http.echo_headers(res)
  end

  it("does not forward the client's credentials", function()
    local hs = echo({
      { "Authorization", "Bearer sk-client-secret" },
      { "api-key", "azure-client-secret" },
      { "x-api-key", "anthropic-client-secret" },
      { "Proxy-Authorization", "Basic Zm9vOmJhcg==" },
      { "x-keep-me", "yes" },
    })
    assert.is_nil(hs["authorization"])
    assert.is_nil(hs["api-key"])
    assert.is_nil(hs["x-api-key"])
    assert.is_nil(hs["proxy-authorization"])
    assert.are.same({ "yes" }, hs["x-keep-me"])
  end)

  it("drops hop-by-hop headers and those the client names in Connection", function()
    local hs = echo({
      { "Connection", "keep-alive, X-Private-Hop" },
      { "X-Private-Hop", "secret" },
      { "Keep-Alive", "timeout=5" },
      { "TE", "trailers" },
      { "Trailer", "x-checksum" },
      { "Proxy-Connection", "keep-alive" },
      { "x-end-to-end", "kept" },
    })
    assert.is_nil(hs["connection"] and hs["connection"][1]:lower():find("private") or nil)
    assert.is_nil(hs["x-private-hop"])
    assert.is_nil(hs["keep-alive"])
    assert.is_nil(hs["te"])
    assert.is_nil(hs["trailer"])
    assert.is_nil(hs["proxy-connection"])
    assert.are.same({ "kept" }, hs["x-end-to-end"])
  end)

  it("sends the backend's host, not the client's", function()
    local hs = echo({ { "x-a", "b" } }, { host = "client.example" })
    assert.are.same({ "127.0.0.1:" .. mock.port }, hs["host"])
  end)

  it("forwards the request id it answers with", function()
    local res = assert(http.request(gw.port, { path = "/mock/echo" }))
    local hs = http.echo_headers(res)
    assert.are.same({ res.headers["x-request-id"] }, hs["x-request-id"])
    assert.is_true(hex32(hs["x-request-id"][1]))
  end)

  it("forwards a chunked body de-chunked with its content-length", function()
    local c = assert(http.connect(gw.port))
    assert(c:send("POST /mock/echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
      .. "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"))
    local res = assert(c:read_response())
    c:close()
    assert.are.equal(200, res.status)
    local hs, j = http.echo_headers(res)
    assert.are.equal(11, j.body_bytes)
    assert.are.same({ "11" }, hs["content-length"])
    assert.is_nil(hs["transfer-encoding"])
  end)
end)
