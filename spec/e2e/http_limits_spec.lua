-- End-to-end: the HTTP/1.1 server refuses oversized, malformed and slow
-- requests itself — with the right status, an OpenAI-shaped error, the
-- connection closed — and never passes them to the backend.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"

describe("sluice HTTP limits", function()
  local mock, gw

  setup(function()
    mock = proc.mock()
    gw = proc.gateway({
      backend_url = mock.url,
      config = {
        limits = { max_body_bytes = "1KiB", max_header_bytes = "4KiB", max_headers = 20 },
        timeouts = { header_read = "500ms", body_read = "500ms", keepalive_idle = "1s" },
      },
    })
  end)

  teardown(function()
    proc.stop_all()
  end)

  -- Requests the mock has served so far (the stats request included).
  local function backend_requests()
    return http.mock_stats(mock.port).requests
  end

  -- Send raw bytes on a new connection, read the answer, and check that
  -- it is an error in the OpenAI shape, that the connection is closed, and
  -- that the backend never saw the request. Returns the response.
  local function refused(raw, status, code, opts)
    opts = opts or {}
    local before = backend_requests()
    local c = assert(http.connect(gw.port))
    local ok, err = c:send(raw)
    if opts.then_wait then proc.sleep(opts.then_wait) end
    local res, rerr = c:read_response({ timeout = opts.timeout or 5 })
    local closed = res and c:closed(1)
    c:close()
    assert(res, "no response: " .. tostring(rerr) .. " (send: " .. tostring(ok or err) .. ")")
    assert.are.equal(status, res.status, res.raw_head .. "\r\n\r\n" .. tostring(res.body))
    assert.are.equal("application/json", res.headers["content-type"])
    local e = http.error_of(res)
    assert(e, "not an OpenAI error body: " .. tostring(res.body))
    if type(code) == "table" then
      assert.is_truthy(({ [code[1]] = 1, [code[2] or 0] = 1 })[e.code],
        "code " .. tostring(e.code))
    else
      assert.are.equal(code, e.code)
    end
    assert.are.equal("invalid_request_error", e.type)
    assert.are.equal("string", type(e.message))
    assert.is_true(#e.message > 0)
    assert.is_true(closed, "the connection stayed open")
    -- +1: the stats request itself
    assert.are.equal(before + 1, backend_requests(), "the backend saw the request")
    return res
  end

  local function head(lines)
    return table.concat(lines, "\r\n") .. "\r\n\r\n"
  end

  it("answers 413 to a Content-Length over the limit before the body is sent", function()
    local t0 = proc.now()
    refused(head({ "POST /v1/chat/completions HTTP/1.1", "Host: x",
      "Content-Type: application/json", "Content-Length: 5000" }),
      413, "request_too_large", { timeout = 2 })
    assert.is_true(proc.now() - t0 < 2 * proc.slow)
  end)

  it("answers 413 to a chunked body that grows over the limit", function()
    local chunk = string.rep("a", 600)
    refused(head({ "POST /v1/chat/completions HTTP/1.1", "Host: x",
      "Transfer-Encoding: chunked" }) ..
      "258\r\n" .. chunk .. "\r\n258\r\n" .. chunk .. "\r\n0\r\n\r\n",
      413, "request_too_large")
  end)

  it("accepts a body at exactly the limit", function()
    local body = string.rep("b", 1024)
    local res = assert(http.request(gw.port, { method = "POST", path = "/mock/echo", body = body }))
    assert.are.equal(200, res.status)
    assert.are.equal(1024, http.json(res.body).body_bytes)
  end)

  it("sends 100 Continue for an acceptable Expect: 100-continue, then the answer", function()
    local c = assert(http.connect(gw.port))
    assert(c:send(head({ "POST /mock/echo HTTP/1.1", "Host: x",
      "Content-Length: 100", "Expect: 100-continue" })))
    local cont = assert(c:read_response({ keep_100 = true, timeout = 3 }))
    assert.are.equal(100, cont.status)
    assert.are.equal("1.1", cont.version)
    assert(c:send(string.rep("c", 100)))
    local res = assert(c:read_response())
    c:close()
    assert.are.equal(200, res.status)
    local hs, j = http.echo_headers(res)
    assert.are.equal(100, j.body_bytes)
    assert.is_nil(hs["expect"])
  end)

  it("answers 413 at once to Expect: 100-continue with a length over the limit", function()
    local c = assert(http.connect(gw.port))
    assert(c:send(head({ "POST /mock/echo HTTP/1.1", "Host: x",
      "Content-Length: 5000", "Expect: 100-continue" })))
    local res = assert(c:read_response({ keep_100 = true, timeout = 3 }))
    local closed = c:closed(1)
    c:close()
    assert.are.equal(413, res.status)
    assert.are.equal("request_too_large", http.error_of(res).code)
    assert.is_true(closed)
  end)

  it("answers 431 to a request head over max_header_bytes", function()
    refused(head({ "GET /mock/echo HTTP/1.1", "Host: x",
      "X-Big: " .. string.rep("h", 5000) }),
      431, "request_header_fields_too_large")
  end)

  it("answers 431 to more headers than max_headers", function()
    local lines = { "GET /mock/echo HTTP/1.1", "Host: x" }
    for i = 1, 25 do lines[#lines + 1] = "X-H" .. i .. ": v" end
    refused(head(lines), 431, "request_header_fields_too_large")
  end)

  it("accepts exactly max_headers headers", function()
    local list = {}
    for i = 1, 19 do list[#list + 1] = { "X-H" .. i, "v" } end -- + host = 20
    local res = assert(http.request(gw.port, { path = "/mock/echo", headers = list }))
    assert.are.equal(200, res.status)
  end)

  it("answers 400 to both Content-Length and Transfer-Encoding", function()
    refused(head({ "POST /mock/echo HTTP/1.1", "Host: x", "Content-Length: 5",
      "Transfer-Encoding: chunked" }) .. "5\r\nhello\r\n0\r\n\r\n",
      400, "invalid_request")
  end)

  it("answers 400 to two differing Content-Length headers", function()
    refused(head({ "POST /mock/echo HTTP/1.1", "Host: x", "Content-Length: 5",
      "Content-Length: 6" }) .. "hello!",
      400, "invalid_request")
  end)

  it("answers 400 to an invalid chunk size", function()
    refused(head({ "POST /mock/echo HTTP/1.1", "Host: x",
      "Transfer-Encoding: chunked" }) .. "zz\r\nhello\r\n0\r\n\r\n",
      400, "invalid_request")
  end)

  it("answers 400 to bare LF line endings in the request head", function()
    refused("GET /mock/echo HTTP/1.1\nHost: x\n\n", 400, "invalid_request")
  end)

  it("answers 400 to a bare LF after a CRLF-terminated request line", function()
    refused("GET /mock/echo HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", 400, "invalid_request")
  end)

  it("answers 400 to whitespace between a header name and its colon", function()
    refused(head({ "GET /mock/echo HTTP/1.1", "Host: x", "X-Space : y" }), 400,
      { "invalid_header", "invalid_request" })
  end)

  it("answers 400 to an obs-folded header value", function()
    refused(head({ "GET /mock/echo HTTP/1.1", "Host: x", "X-Folded: first",
      "  second" }), 400, "invalid_header")
  end)

  it("answers 400 to an HTTP/1.1 request without Host", function()
    refused(head({ "GET /mock/echo HTTP/1.1", "X-A: b" }), 400, "invalid_host")
  end)

  it("answers 400 to an HTTP/1.1 request with two Host headers", function()
    refused(head({ "GET /mock/echo HTTP/1.1", "Host: a", "Host: b" }), 400, "invalid_host")
  end)

  it("answers 408 when the request head does not arrive within header_read", function()
    local t0 = proc.now()
    refused("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n", 408,
      "request_timeout", { timeout = 5 })
    local dt = proc.now() - t0
    assert.is_true(dt >= 0.4, string.format("408 after %.3fs", dt))
  end)

  it("does not extend header_read for a client trickling the head", function()
    local before = backend_requests()
    local c = assert(http.connect(gw.port))
    local t0 = proc.now()
    local parts = { "GET /mock/echo HTTP/1.1\r\n", "Host: x\r\n", "X-A: 1\r\n",
      "X-B: 2\r\n", "X-C: 3\r\n", "X-D: 4\r\n", "X-E: 5\r\n", "\r\n" }
    local t_answer
    for _, p in ipairs(parts) do
      if not c:send(p) then break end
      c:fill(0.15) -- watch for the answer while trickling
      if #c.buf > 0 or c.eof then t_answer = proc.now(); break end
    end
    local res = c:read_response({ timeout = 3 })
    t_answer = t_answer or (res and res.t_head)
    c:close()
    assert.is_truthy(res)
    assert.are.equal(408, res.status)
    assert.are.equal("request_timeout", http.error_of(res).code)
    local dt = t_answer - t0
    assert.is_true(dt < 0.9 * proc.slow, string.format("408 after %.3fs", dt))
    assert.are.equal(before + 1, backend_requests())
  end)

  it("answers 408 when the body stalls longer than body_read", function()
    local t0 = proc.now()
    refused(head({ "POST /v1/chat/completions HTTP/1.1", "Host: x",
      "Content-Length: 100" }) .. string.rep("d", 10), 408, "request_timeout",
      { timeout = 5 })
    assert.is_true(proc.now() - t0 >= 0.4)
  end)

  it("closes an idle keep-alive connection after keepalive_idle", function()
    local c = assert(http.connect(gw.port))
    assert(c:send(http.request_bytes({ path = "/mock/echo" })))
    local res = assert(c:read_response())
    assert.are.equal(200, res.status)
    assert.is_false(c:closed(0.5), "closed before keepalive_idle")
    local closed = c:closed(2 * proc.slow)
    local leftover = c.buf
    c:close()
    assert.is_true(closed, "still open after keepalive_idle")
    assert.are.equal("", leftover) -- closed without an answer
  end)

  it("keeps serving normal requests after all of the above", function()
    local res = assert(http.chat(gw.port))
    assert.are.equal(200, res.status)
  end)
end)
