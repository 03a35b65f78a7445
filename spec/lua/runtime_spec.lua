-- runtime_spec.lua — the plugin runtime as plugins see it (lua/sluice/
-- runtime.lua, ctx.lua), driven through sluice.test with the fixture
-- plugins in spec/fixtures/plugins: chain order, deny, the request API,
-- ctx.vars, annotations, route, upstream_response, body filters, log,
-- errors and fail_open, schema defaults and init.
local t = require "sluice.test"
local json = require "sluice.json"

local FIXTURES = "spec/fixtures/plugins"

describe("the plugin runtime", function()
  local saved_dirs

  setup(function()
    saved_dirs = t.plugin_dirs
    t.plugin_dirs = { FIXTURES }
  end)

  teardown(function()
    t.plugin_dirs = saved_dirs
  end)

  local function chat(extra)
    local req = { method = "POST", path = "/v1/chat/completions",
                  headers = { ["content-type"] = "application/json" },
                  json = { model = "gpt-4o", messages = { { role = "user", content = "hi" } } } }
    for k, v in pairs(extra or {}) do req[k] = v end
    return req
  end

  describe("chain order", function()
    it("runs plugins by priority, higher first, whatever the policy order", function()
      local out = {}
      local chain = t.chain({
        { name = "order-low", config = { out = out } },
        { name = "order-mid-a", config = { out = out } },
        { name = "order-high", config = { out = out } },
      })
      local res = t.request(chain, chat())
      assert.are.equal("ok", res.action)
      assert.are.same({ "order-high", "order-mid-a", "order-low" }, out.order)
      assert.are.equal("order-high,order-mid-a,order-low", res.header_map["x-order"])
    end)

    it("keeps policy order among plugins of equal priority", function()
      local out = {}
      local chain = t.chain({
        { name = "order-mid-b", config = { out = out } },
        { name = "order-low", config = { out = out } },
        { name = "order-mid-a", config = { out = out } },
      })
      t.request(chain, chat())
      assert.are.same({ "order-mid-b", "order-mid-a", "order-low" }, out.order)

      local out2 = {}
      local chain2 = t.chain({
        { name = "order-mid-a", config = { out = out2 } },
        { name = "order-mid-b", config = { out = out2 } },
      })
      t.request(chain2, chat())
      assert.are.same({ "order-mid-a", "order-mid-b" }, out2.order)
    end)
  end)

  describe("ctx:deny", function()
    it("stops the chain: plugins after the denying one do not run", function()
      local out = {}
      local chain = t.chain({
        { name = "order-low", config = { out = out } },
        { name = "deny", config = { status = 451, code = "nope", message = "not here" } },
        { name = "order-mid-b", config = { out = out } }, -- same priority, after deny
        { name = "order-high", config = { out = out } },
      })
      local res = t.request(chain, chat())
      assert.are.equal("deny", res.action)
      assert.are.equal(451, res.status)
      assert.are.equal("nope", res.code)
      assert.are.equal("not here", res.message)
      assert.are.equal("deny", res.plugin)
      assert.are.same({ "order-high" }, out.order)
    end)

    it("returns the deny headers (Retry-After) with the verdict", function()
      local chain = t.chain({
        { name = "deny", config = { status = 429, code = "rate_limited",
                                    headers = { ["Retry-After"] = "17" } } },
      })
      local res = t.request(chain, chat())
      assert.are.equal("deny", res.action)
      assert.are.equal(429, res.status)
      -- header names come back lowercase, like every header sluice handles
      assert.are.same({ "retry-after", "17" }, res.deny_headers)
    end)

    it("uses the defaults of the deny fixture when only the status is given", function()
      local res = t.request(t.chain({ { name = "deny", config = {} } }), chat())
      assert.are.equal(403, res.status)
      assert.are.equal("denied_by_fixture", res.code)
      assert.is_nil(res.deny_headers)
    end)

    it("skips the route phase of a denied request", function()
      local chain = t.chain({
        { name = "deny", config = {} },
        { name = "route", config = { targets = { "a" } } },
      })
      local res = t.request(chain, chat())
      assert.are.equal("deny", res.action)
      assert.is_nil(res.targets)
    end)
  end)

  describe("ctx.request", function()
    it("shows method, path, query, headers (case-insensitive), body and JSON", function()
      local out = {}
      local chain = t.chain({ { name = "req-inspect", config = { out = out } } })
      local req = chat({ path = "/v1/embeddings", query = "a=1&b=2",
        headers = { ["X-Test"] = "yes", ["content-type"] = "application/json" } })
      local res = t.request(chain, req)
      assert.are.equal("ok", res.action)
      assert.are.equal("POST", out.method)
      assert.are.equal("/v1/embeddings", out.path)
      assert.are.equal("a=1&b=2", out.query)
      assert.are.equal("yes", out.lower)
      assert.are.equal("yes", out.mixed)
      assert.are.equal("yes", out.upper)
      assert.is_nil(out.missing)
      assert.are.equal("yes", out.headers["x-test"])
      assert.are.equal("application/json", out.headers["content-type"])
      assert.is_nil(out.again, "headers() must return a copy")
      assert.are.equal("gpt-4o", out.json.model)
      assert.are.equal("hi", out.json.messages[1].content)
      assert.are.same(json.decode(out.body), out.json)
      assert.is_true(out.json_same, "json() must decode once and return the same table")
      -- nothing changed: nothing to send back
      assert.is_nil(res.headers)
      assert.is_nil(res.body)
    end)

    it("gives json() = nil and an error for a body that is not JSON", function()
      local out = {}
      local chain = t.chain({ { name = "req-inspect", config = { out = out } } })
      t.request(chain, { body = "not json", headers = {} })
      assert.is_nil(out.json)
      assert.matches("invalid JSON", out.json_err)
      assert.are.equal("not json", out.body)
    end)

    it("reflects set_header and remove_header in the headers sent on", function()
      local chain = t.chain({ { name = "req-mutate", config = {
        set = { ["X-Added"] = "1", authorization = "Bearer new" },
        remove = { "X-Drop" },
      } } })
      local res = t.request(chain, chat({ headers = {
        authorization = "Bearer old", ["x-drop"] = "bye", ["x-keep"] = "k" } }))
      assert.are.equal("ok", res.action)
      assert.are.equal("1", res.header_map["x-added"])
      assert.are.equal("Bearer new", res.header_map["authorization"])
      assert.are.equal("k", res.header_map["x-keep"])
      assert.is_nil(res.header_map["x-drop"])
      -- a header name appears once in the flat list
      local seen = {}
      for i = 1, #res.headers, 2 do
        assert.is_nil(seen[res.headers[i]], "duplicate " .. res.headers[i])
        seen[res.headers[i]] = true
      end
    end)

    it("raises on an invalid header name", function()
      for _, bad in ipairs({ "bad name", "x:y", "", "x\r\ny" }) do
        local chain = t.chain({ { name = "req-mutate", config = { bad_name = bad } } })
        local res = t.request(chain, chat())
        assert.are.equal("error", res.action, ("name %q"):format(bad))
        assert.are.equal("req-mutate", res.plugin)
        assert.matches("invalid header name", res.message, 1, true)
      end
    end)

    it("raises on an invalid header value (CR, LF or NUL)", function()
      for _, bad in ipairs({ "a\r\nx-injected: 1", "a\nb", "a\0b" }) do
        local chain = t.chain({ { name = "req-mutate", config = { bad_value = bad } } })
        local res = t.request(chain, chat())
        assert.are.equal("error", res.action, ("value %q"):format(bad))
        assert.matches("invalid value for header x-bad", res.message, 1, true)
      end
    end)

    it("re-encodes the body after set_json", function()
      local chain = t.chain({ { name = "req-mutate", config = {
        json_set = { model = "gpt-4o-mini", temperature = 0 } } } })
      local res = t.request(chain, chat())
      assert.are.equal("ok", res.action)
      local body = assert(json.decode(res.body))
      assert.are.equal("gpt-4o-mini", body.model)
      assert.are.equal(0, body.temperature)
      assert.are.equal("hi", body.messages[1].content)
    end)

    it("sends the new body after set_body, unchanged by JSON", function()
      local chain = t.chain({ { name = "req-mutate", config = { body = "raw bytes" } } })
      local res = t.request(chain, chat())
      assert.are.equal("ok", res.action)
      assert.are.equal("raw bytes", res.body)
    end)

    it("lets a later plugin see a header an earlier plugin set", function()
      local chain = t.chain({
        { name = "order-high", config = {} },
        { name = "order-low", config = {} },
      })
      local res = t.request(chain, chat({ headers = { ["x-order"] = "client" } }))
      assert.are.equal("client,order-high,order-low", res.header_map["x-order"])
    end)
  end)

  describe("ctx.vars", function()
    it("is private to each plugin and persists across the phases of a request", function()
      local out = {}
      local chain = t.chain({
        { name = "vars-a", config = { tag = "A", out = out } },
        { name = "vars-b", config = { tag = "B", out = out } },
      })
      local res = t.request(chain, chat())
      assert.are.equal("ok", res.action)
      assert.are.same({}, out["vars-a.access_before"])
      assert.are.same({}, out["vars-b.access_before"], "vars-b saw vars-a's ctx.vars")
      assert.are.equal("accept", t.upstream_response(chain, res.ctx, 200, {}))
      t.body_filter(chain, res.ctx, "data", true)
      t.log(chain, res.ctx, {})
      assert.are.equal("A", out["vars-a.upstream_response"])
      assert.are.equal("B", out["vars-b.upstream_response"])
      assert.are.equal("A", out["vars-a.body_filter"])
      assert.are.equal("B", out["vars-b.body_filter"])
      assert.are.equal("A", out["vars-a.log"])
      assert.are.equal("B", out["vars-b.log"])
    end)

    it("starts empty for every request", function()
      local out = {}
      local chain = t.chain({ { name = "vars-a", config = { tag = "A", out = out } } })
      t.request(chain, chat())
      t.request(chain, chat())
      assert.are.same({}, out["vars-a.access_before"])
    end)
  end)

  describe("annotations and the log phase", function()
    it("hands ctx:annotate entries to the log record as notes, with the plugin name", function()
      local out = {}
      local chain = t.chain({ { name = "annotate", config = { key = "decision", value = "allowed", out = out } } })
      local res = t.request(chain, chat())
      assert.are.equal("ok", res.action)
      local record = t.log(chain, res.ctx, { status = 200 })
      assert.are.same({ { plugin = "annotate", key = "decision", value = "allowed" } }, record.notes)
      assert.are.equal(record, out.record, "the log phase gets the record itself")
      assert.are.equal(200, record.annotate_saw_status)
    end)
  end)

  describe("route", function()
    it("returns the list of backend names a route plugin chose", function()
      local chain = t.chain({ { name = "route", config = { targets = { "primary", "fallback" } } } },
        { backends = { primary = true, fallback = true } })
      local res = t.request(chain, chat())
      assert.are.equal("ok", res.action, res.message)
      assert.are.same({ "primary", "fallback" }, res.targets)
    end)

    it("fails the request naming the route plugin when it chose an unknown backend", function()
      local chain = t.chain({ { name = "route", config = { targets = { "primary", "nowhere" } } } },
        { backends = { primary = true } })
      local res = t.request(chain, chat())
      assert.are.equal("error", res.action)
      assert.are.equal("route", res.plugin)
      assert.matches("nowhere", res.message, 1, true)
    end)

    it("returns no targets when no plugin routes", function()
      local res = t.request(t.chain({ { name = "order-low", config = {} } }), chat())
      assert.is_nil(res.targets)
    end)
  end)

  describe("upstream_response", function()
    it("moves on to the next target when a plugin returns 'next'", function()
      local out = {}
      local chain = t.chain({ { name = "upstream-next", config = { min_status = 500, out = out } } })
      local res = t.request(chain, chat())
      assert.are.equal("next", t.upstream_response(chain, res.ctx, 503, { ["X-Up"] = "1" }, "primary"))
      assert.are.equal("accept", t.upstream_response(chain, res.ctx, 200, { ["X-Up"] = "2" }, "fallback"))
      assert.are.same({ { status = 503, backend = "primary", header = "1" },
                        { status = 200, backend = "fallback", header = "2" } }, out.seen)
    end)
  end)

  describe("body_filter", function()
    it("passes each filter's output to the next one, in priority order", function()
      local chain = t.chain({
        { name = "filter-wrap", config = {} },
        { name = "filter-upper", config = {} },
      })
      local res = t.request(chain, chat())
      assert.are.equal("[HELLO]", t.body_filter(chain, res.ctx, "hello", false))
      assert.are.equal("[WORLD]!", t.body_filter(chain, res.ctx, "world", true))
    end)

    it("keeps the data unchanged when filters return nil, and shows them what changed", function()
      local out = {}
      local chain = t.chain({
        { name = "filter-upper", config = {} },
        { name = "filter-observe", config = { out = out } },
      })
      local res = t.request(chain, chat())
      assert.are.equal("ABC", t.body_filter(chain, res.ctx, "abc", true))
      assert.are.same({ "ABC" }, out.seen)

      local out2 = {}
      local chain2 = t.chain({ { name = "filter-observe", config = { out = out2 } } })
      local res2 = t.request(chain2, chat())
      assert.are.equal("as is", t.body_filter(chain2, res2.ctx, "as is", true))
      assert.are.same({ "as is" }, out2.seen)
    end)
  end)

  describe("errors", function()
    it("fails the request with action 'error' naming the plugin", function()
      local out = {}
      local chain = t.chain({
        { name = "boom", config = { message = "kaput" } },
        { name = "order-low", config = { out = out } },
      })
      local res = t.request(chain, chat())
      assert.are.equal("error", res.action)
      assert.are.equal("boom", res.plugin)
      assert.are.equal("kaput", res.message)
      assert.is_nil(out.order, "the chain went on after an error")
    end)

    it("skips a fail_open plugin that errors and annotates the record", function()
      local out = {}
      local chain = t.chain({
        { name = "boom", config = { message = "kaput" }, fail_open = true },
        { name = "order-low", config = { out = out } },
        { name = "annotate", config = { key = "k", value = "v", out = out } },
      })
      local res = t.request(chain, chat())
      assert.are.equal("ok", res.action)
      assert.are.same({ "order-low" }, out.order)
      local record = t.log(chain, res.ctx, {})
      assert.are.same({ plugin = "boom", key = "plugin_error", value = "failed open: kaput" },
        record.notes[1])
    end)
  end)

  describe("configuration", function()
    it("applies schema defaults to missing fields and keeps given ones", function()
      local out = {}
      local chain = t.chain({ { name = "defaults", config = { out = out, given = "mine" } } })
      t.request(chain, chat())
      assert.are.equal(10, out.conf.limit)
      assert.are.equal("strict", out.conf.mode)
      assert.are.same({ "a", "b" }, out.conf.tags)
      assert.are.equal("mine", out.conf.given)
    end)

    it("gives each compiled chain its own copy of a table default", function()
      local out1, out2 = {}, {}
      t.request(t.chain({ { name = "defaults", config = { out = out1 } } }), chat())
      table.insert(out1.conf.tags, "changed")
      t.request(t.chain({ { name = "defaults", config = { out = out2 } } }), chat())
      assert.are.same({ "a", "b" }, out2.conf.tags)
    end)

    it("runs init once per compile, and access uses what it precomputed", function()
      local out = {}
      local chain = t.chain({ { name = "init-count", config = { models = { "bad-model" }, out = out } } })
      assert.are.equal(1, out.inits)
      local res = t.request(chain, chat({ json = { model = "bad-model" } }))
      assert.are.equal("deny", res.action)
      assert.are.equal("model bad-model is not allowed", res.message)
      assert.are.equal("ok", t.request(chain, chat()).action)
      t.request(chain, chat())
      assert.are.equal(1, out.inits, "init ran again at request time")
      t.chain({ { name = "init-count", config = { models = {}, out = out } } })
      assert.are.equal(2, out.inits)
    end)
  end)
end)

describe("the plugin runtime, phases(conf)", function()
  local t = require "sluice.test"
  local runtime = require "sluice.runtime"
  it("leaves out the phases a configuration does not need", function()
    t.plugin_dirs = { "spec/fixtures/plugins" }
    local off = t.chain({ { name = "phase-select" } })
    assert.equals(runtime.PHASE_BIT.access, off.mask)
    assert.equals(0, #off.body_filter)
    local on = t.chain({ { name = "phase-select", config = { filter = true } } })
    assert.equals(runtime.PHASE_BIT.access + runtime.PHASE_BIT.body_filter, on.mask)
    local res = t.request(on, { json = {} })
    assert.equals("HI", t.body_filter(on, res.ctx, "hi", true))
  end)
end)
