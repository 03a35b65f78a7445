-- End-to-end: TLS on both sides, with a CA and a server certificate for
-- "localhost" made here with the openssl CLI. Clients reach an HTTPS
-- listener; sluice reaches an HTTPS backend and verifies it against the
-- configured CA, the system bundle, or not at all when told so.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"
local certs_for = require "spec.helpers.certs"

local q = proc.quote

-- curl: returns status code, headers map, body, curl's exit status.
local function curl(args)
  local dir = proc.tmpdir()
  local cmd = "curl -sS --max-time 10 -o " .. q(dir .. "/body") .. " -D " .. q(dir .. "/head")
    .. " -w '%{http_code} %{num_connects}\\n' " .. args
  local st, out = proc.run(cmd)
  local head = proc.read_file(dir .. "/head") or ""
  local body = proc.read_file(dir .. "/body") or ""
  proc.rmdir(dir)
  local headers = {}
  for name, value in head:gmatch("([%w%-]+):%s*([^\r\n]*)") do headers[name:lower()] = value end
  local codes = {}
  for code in out:gmatch("(%d%d%d) %d+") do codes[#codes + 1] = tonumber(code) end
  local connects = {}
  for n in out:gmatch("%d%d%d (%d+)") do connects[#connects + 1] = tonumber(n) end
  return { status = codes[#codes], codes = codes, connects = connects, headers = headers,
    body = body, exit = st, out = out }
end

local chat_data = q(http.chat_body())

describe("sluice TLS", function()
  local dir, certs

  setup(function()
    dir = proc.tmpdir()
    certs = certs_for.localhost(dir, "sluice spec CA")
  end)

  teardown(function()
    proc.stop_all()
    proc.rmdir(dir)
  end)

  describe("on the client listener", function()
    local mock, gw

    setup(function()
      mock = proc.mock()
      gw = proc.gateway({
        backend_url = mock.url,
        config = function(port)
          return { listen = { { address = "127.0.0.1:" .. port,
            tls = { cert = certs.cert, key = certs.key } } } }
        end,
      })
    end)

    it("serves a chat completion over HTTPS", function()
      local r = curl("--cacert " .. q(certs.ca) .. " -H 'content-type: application/json' -d "
        .. chat_data .. " https://localhost:" .. gw.port .. "/v1/chat/completions")
      assert.are.equal(0, r.exit, r.out)
      assert.are.equal(200, r.status)
      assert.are.equal("chatcmpl-mock", http.json(r.body).id)
      assert.are.equal("mock", r.headers["x-sluice-backend"])
      assert.are.equal(32, #(r.headers["x-request-id"] or ""))
    end)

    it("streams SSE over HTTPS to the end", function()
      local r = curl("-N --cacert " .. q(certs.ca) .. " -H 'x-mock-chunks: 3' -d "
        .. q(http.chat_body('"stream":true')) .. " https://localhost:" .. gw.port
        .. "/v1/chat/completions")
      assert.are.equal(0, r.exit, r.out)
      assert.are.equal(200, r.status)
      assert.is_truthy(r.body:find("data: [DONE]\n\n", 1, true))
    end)

    it("keeps an HTTPS client connection alive across requests", function()
      local url = "https://localhost:" .. gw.port .. "/mock/echo"
      local r = curl("--cacert " .. q(certs.ca) .. " " .. url .. " " .. url .. " " .. url)
      assert.are.equal(0, r.exit, r.out)
      assert.are.same({ 200, 200, 200 }, r.codes)
      assert.are.same({ 1, 0, 0 }, r.connects)
    end)

    it("presents the configured certificate (a client without the CA refuses it)", function()
      local r = curl("https://localhost:" .. gw.port .. "/mock/echo")
      assert.are.equal(60, r.exit, r.out) -- curl: peer certificate cannot be verified
    end)

    it("does not answer plain HTTP on the HTTPS listener, and keeps serving", function()
      local c = assert(http.connect(gw.port))
      c:send(http.request_bytes({ path = "/mock/echo" }))
      local res = c:read_response({ timeout = 2 })
      c:close()
      assert.is_true(res == nil or res.status ~= 200)
      local r = curl("--cacert " .. q(certs.ca) .. " https://localhost:" .. gw.port .. "/mock/echo")
      assert.are.equal(200, r.status)
    end)
  end)

  describe("toward the backend", function()
    local tmock

    setup(function()
      tmock = proc.mock({ tls_cert = certs.cert, tls_key = certs.key })
    end)

    local function gateway(url, extra)
      return proc.gateway({ policy = proc.policy(url, "tlsmock", extra) })
    end

    it("verifies the backend against ca_file and serves the request", function()
      local gw = gateway("https://localhost:" .. tmock.port, { ca_file = certs.ca })
      local res = assert(http.chat(gw.port))
      assert.are.equal(200, res.status, res.body)
      assert.are.equal("chatcmpl-mock", http.json(res.body).id)
      assert.are.equal("tlsmock", res.headers["x-sluice-backend"])
      -- the request travelled over TLS with the backend's host name
      local echo = assert(http.request(gw.port, { path = "/mock/echo" }))
      assert.are.equal(200, echo.status)
      assert.are.same({ "localhost:" .. tmock.port }, http.echo_headers(echo)["host"])
      proc.stop(gw.proc)
    end)

    it("reuses TLS connections to the backend", function()
      local gw = gateway("https://localhost:" .. tmock.port, { ca_file = certs.ca })
      local before = curl("--cacert " .. q(certs.ca) .. " https://localhost:" .. tmock.port .. "/mock/stats")
      assert.are.equal(200, before.status, before.out)
      local c0 = tonumber(before.body:match('"connections":(%d+)'))
      for i = 1, 10 do
        local res = assert(http.chat(gw.port))
        assert.are.equal(200, res.status, "request " .. i)
      end
      local after = curl("--cacert " .. q(certs.ca) .. " https://localhost:" .. tmock.port .. "/mock/stats")
      local c1 = tonumber(after.body:match('"connections":(%d+)'))
      -- minus the stats request's own connection
      assert.is_true(c1 - c0 - 1 <= 2, "TLS connections opened: " .. (c1 - c0 - 1))
      proc.stop(gw.proc)
    end)

    it("answers 502 upstream_tls_error when the system bundle does not trust the backend", function()
      local gw = gateway("https://localhost:" .. tmock.port)
      local res = assert(http.chat(gw.port))
      assert.are.equal(502, res.status, res.body)
      local e = http.error_of(res)
      assert.are.equal("upstream_tls_error", e.code)
      assert.are.equal("upstream_error", e.type)
      -- and keeps doing so, without crashing
      local again = assert(http.chat(gw.port))
      assert.are.equal(502, again.status)
      assert.is_true(proc.alive(gw.proc))
      proc.stop(gw.proc)
    end)

    it("answers 502 upstream_tls_error when the certificate does not name the backend's host", function()
      -- the certificate names only DNS:localhost
      local gw = gateway("https://127.0.0.1:" .. tmock.port, { ca_file = certs.ca })
      local res = assert(http.chat(gw.port))
      assert.are.equal(502, res.status, res.body)
      assert.are.equal("upstream_tls_error", http.error_of(res).code)
      proc.stop(gw.proc)
    end)

    it("serves the request without verification when tls_verify is false", function()
      local gw = gateway("https://localhost:" .. tmock.port, { tls_verify = false })
      local res = assert(http.chat(gw.port))
      assert.are.equal(200, res.status, res.body)
      assert.are.equal("chatcmpl-mock", http.json(res.body).id)
      proc.stop(gw.proc)
    end)

    it("answers 502 when the backend speaks plain HTTP to an https:// url", function()
      local plain = proc.mock()
      local gw = gateway("https://localhost:" .. plain.port, { tls_verify = false })
      local res = assert(http.chat(gw.port))
      assert.are.equal(502, res.status, res.body)
      assert.are.equal("upstream_tls_error", http.error_of(res).code)
      proc.stop(gw.proc)
      proc.stop(plain.proc)
    end)
  end)
end)
