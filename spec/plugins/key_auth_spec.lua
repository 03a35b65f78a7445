-- key_auth_spec.lua — the key-auth plugin in the real runtime and sandbox:
-- who may call, how a key is presented, what the consumer looks like to
-- later plugins, what is recorded, and that no key travels on.
local t = require "sluice.test"
local hash = require "sluice.hash"

-- The hash as the documentation tells operators to make it: with the
-- system's sha256sum, not with the code under test.
local function sha256sum(key)
  local p = assert(io.popen("printf %s '" .. key .. "' | sha256sum"))
  local out = p:read("*l")
  p:close()
  return "sha256:" .. out:match("^(%x+)")
end

local CHAT_KEY = "sk-gw-chat-0123456789abcdef"
local CHAT_OLD = "sk-gw-chat-old-key"
local BATCH_KEY = "sk-gw-batch-key"
local OFF_KEY = "sk-gw-retired-app"

local function day(offset)
  return os.date("!%Y-%m-%d", os.time() + offset * 86400)
end

local function consumers()
  return {
    ["support-chat"] = {
      app = "support-chat-web", team = "customer-care", owner = "ana@example.com",
      data_class = "confidential", models = { "gpt-4o-mini" }, regions = { "eu" },
      raise = { "restricted" },
      keys = {
        { hash = sha256sum(CHAT_KEY), name = "2026-q3" },
        { hash = sha256sum(CHAT_OLD), name = "2026-q2", expires = day(30) },
      },
    },
    batch = { team = "data", keys = { { hash = sha256sum(BATCH_KEY) } } },
    retired = { team = "legacy", disabled = true, keys = { { hash = sha256sum(OFF_KEY) } } },
  }
end

local function chain(extra)
  local config = { consumers = consumers() }
  for k, v in pairs(extra or {}) do config[k] = v end
  return t.chain({ { name = "key-auth", config = config } })
end

local function decision_of(res)
  local list = t.decisions(res.ctx)
  return list[#list]
end

describe("key-auth plugin", function()
  describe("a valid key", function()
    it("identifies the consumer from Authorization: Bearer", function()
      local res = t.request(chain(), { headers = { authorization = "Bearer " .. CHAT_KEY } })
      assert.are.equal("ok", res.action, res.message)
      local c = res.ctx.consumer
      assert.are.equal("support-chat", c.id)
      assert.are.equal("support-chat-web", c.app)
      assert.are.equal("customer-care", c.team)
      assert.are.equal("ana@example.com", c.owner)
      assert.are.equal("confidential", c.data_class)
      assert.are.same({ "gpt-4o-mini" }, c.models)
      assert.are.same({ "eu" }, c.regions)
      assert.are.same({ "restricted" }, c.raise)
      assert.are.equal("key-auth", c.source)
    end)

    it("accepts the Bearer scheme in any case and with several spaces", function()
      local c = chain()
      for _, v in ipairs({ "bearer ", "BEARER ", "Bearer   " }) do
        local res = t.request(c, { headers = { authorization = v .. BATCH_KEY } })
        assert.are.equal("ok", res.action, v)
        assert.are.equal("batch", res.ctx.consumer.id)
      end
    end)

    it("reads the key from api-key (Azure SDKs) and x-api-key (Anthropic's API)", function()
      local c = chain()
      local az = t.request(c, { headers = { ["api-key"] = BATCH_KEY } })
      assert.are.equal("ok", az.action)
      assert.are.equal("batch", az.ctx.consumer.id)
      local an = t.request(c, { path = "/v1/messages", headers = { ["x-api-key"] = CHAT_KEY } })
      assert.are.equal("ok", an.action)
      assert.are.equal("support-chat", an.ctx.consumer.id)
    end)

    it("uses the consumer's id as its app when policy names none, and leaves the rest unset", function()
      local res = t.request(chain(), { headers = { authorization = "Bearer " .. BATCH_KEY } })
      local c = res.ctx.consumer
      assert.are.equal("batch", c.app)
      assert.are.equal("data", c.team)
      assert.is_nil(c.models)
      assert.is_nil(c.regions)
      assert.is_nil(c.data_class)
    end)

    it("accepts every key of a consumer during a rotation, until the old one expires", function()
      local c = chain()
      local new = t.request(c, { headers = { authorization = "Bearer " .. CHAT_KEY } })
      local old = t.request(c, { headers = { authorization = "Bearer " .. CHAT_OLD } })
      assert.are.equal("support-chat", new.ctx.consumer.id)
      assert.are.equal("support-chat", old.ctx.consumer.id)
    end)

    it("records an allow decision naming the consumer and which key was used", function()
      local c = chain()
      local res = t.request(c, { headers = { authorization = "Bearer " .. CHAT_OLD } })
      assert.are.same({ plugin = "key-auth", outcome = "allow",
                        reason = "consumer support-chat (key 2026-q2)" }, decision_of(res))
      res = t.request(c, { headers = { authorization = "Bearer " .. BATCH_KEY } })
      assert.are.equal("consumer batch", decision_of(res).reason)
    end)

    it("puts the consumer in the audit record, and the key nowhere in it", function()
      local c = chain()
      local res = t.request(c, { headers = { authorization = "Bearer " .. CHAT_KEY } })
      local _, audit = t.log(c, res.ctx)
      assert.are.same({ id = "support-chat", app = "support-chat-web", team = "customer-care",
                        source = "key-auth" }, audit.consumer)
      local text = require("sluice.json").encode(audit)
      assert.is_nil(text:find(CHAT_KEY, 1, true))
      assert.is_nil(text:find(hash.sha256(CHAT_KEY), 1, true))
    end)

    it("removes every key header before the request goes upstream", function()
      local res = t.request(chain({ key_headers = { "api-key", "x-api-key", "x-gateway-key" } }), {
        headers = { authorization = "Bearer " .. CHAT_KEY, ["x-api-key"] = CHAT_KEY,
                    ["x-gateway-key"] = "whatever", ["x-team"] = "care" },
      })
      assert.are.equal("ok", res.action)
      assert.is_table(res.header_map, "no header was removed")
      assert.is_nil(res.header_map.authorization)
      assert.is_nil(res.header_map["x-api-key"])
      assert.is_nil(res.header_map["x-gateway-key"])
      assert.are.equal("care", res.header_map["x-team"])
    end)

    it("lets a later plugin read the consumer but not change the policy's copy", function()
      local c = t.chain({
        { name = "key-auth", config = { consumers = consumers() } },
        { name = "tamper", path = "spec/plugins/support/key-auth-tamper.lua" },
      })
      local first = t.request(c, { headers = { authorization = "Bearer " .. CHAT_KEY,
                                               ["x-tamper"] = "1" } })
      assert.are.equal("ok", first.action, first.message)
      assert.are.same({ "every-model" }, first.ctx.consumer.models)
      local second = t.request(c, { headers = { authorization = "Bearer " .. CHAT_KEY } })
      assert.are.same({ "gpt-4o-mini" }, second.ctx.consumer.models)
    end)
  end)

  describe("a request without a key", function()
    it("is refused with 401 missing_api_key and www-authenticate: Bearer", function()
      local res = t.request(chain(), { headers = { ["x-team"] = "care" } })
      assert.are.equal("deny", res.action)
      assert.are.equal(401, res.status)
      assert.are.equal("missing_api_key", res.code)
      assert.are.equal("Bearer", res.response_headers["www-authenticate"])
      assert.matches("Authorization: Bearer <key>", res.message, 1, true)
      assert.matches("x-api-key: <key>", res.message, 1, true)
    end)

    it("counts an empty key, a bare Bearer or another scheme as no key", function()
      local c = chain()
      for _, h in ipairs({ { authorization = "Bearer " }, { authorization = "Bearer" },
                           { authorization = "Basic dXNlcjpwYXNz" }, { ["api-key"] = "" } }) do
        local res = t.request(c, { headers = h })
        assert.are.equal(401, res.status)
        assert.are.equal("missing_api_key", res.code)
      end
    end)

    it("runs as the anonymous consumer when policy names one", function()
      local cons = consumers()
      cons.public = { team = "web", data_class = "public", models = { "mock-small" } }
      local c = t.chain({ { name = "key-auth", config = { consumers = cons, anonymous = "public" } } })
      local res = t.request(c, {})
      assert.are.equal("ok", res.action)
      assert.are.equal("public", res.ctx.consumer.id)
      assert.are.equal("public", res.ctx.consumer.data_class)
      assert.are.equal("anonymous consumer public", decision_of(res).reason)
      -- a key that is presented still has to be right
      local bad = t.request(c, { headers = { authorization = "Bearer nope" } })
      assert.are.equal(401, bad.status)
      assert.are.equal("invalid_api_key", bad.code)
      local good = t.request(c, { headers = { authorization = "Bearer " .. BATCH_KEY } })
      assert.are.equal("batch", good.ctx.consumer.id)
    end)

    it("is refused when the anonymous consumer is disabled", function()
      local cons = consumers()
      cons.public = { disabled = true }
      local c = t.chain({ { name = "key-auth", config = { consumers = cons, anonymous = "public" } } })
      local res = t.request(c, {})
      assert.are.equal(401, res.status)
      assert.are.equal("missing_api_key", res.code)
    end)
  end)

  describe("a key that does not open the gateway", function()
    it("is refused with 401 invalid_api_key when no consumer holds it", function()
      local res = t.request(chain(), { headers = { authorization = "Bearer sk-made-up" } })
      assert.are.equal("deny", res.action)
      assert.are.equal(401, res.status)
      assert.are.equal("invalid_api_key", res.code)
      assert.are.equal('Bearer error="invalid_token"', res.response_headers["www-authenticate"])
    end)

    it("is refused when the first header carrying a key holds a wrong one", function()
      local res = t.request(chain(), { headers = { authorization = "Bearer sk-made-up",
                                                    ["x-api-key"] = CHAT_KEY } })
      assert.are.equal("invalid_api_key", res.code)
    end)

    it("is not matched by its hash sent as the key, nor by a near miss", function()
      local c = chain()
      for _, k in ipairs({ sha256sum(CHAT_KEY), hash.sha256(CHAT_KEY), CHAT_KEY .. " ",
                           CHAT_KEY:sub(1, -2), CHAT_KEY:upper() }) do
        local res = t.request(c, { headers = { authorization = "Bearer " .. k } })
        assert.are.equal("invalid_api_key", res.code, k)
      end
    end)

    it("is refused with 403 consumer_disabled when its consumer is disabled", function()
      local res = t.request(chain(), { headers = { authorization = "Bearer " .. OFF_KEY } })
      assert.are.equal(403, res.status)
      assert.are.equal("consumer_disabled", res.code)
      assert.is_nil(res.ctx.consumer)
    end)

    it("is refused with 403 api_key_revoked when the key is revoked", function()
      local cons = consumers()
      cons["support-chat"].keys[2].revoked = true
      local c = t.chain({ { name = "key-auth", config = { consumers = cons } } })
      local res = t.request(c, { headers = { authorization = "Bearer " .. CHAT_OLD } })
      assert.are.equal(403, res.status)
      assert.are.equal("api_key_revoked", res.code)
      -- the consumer's other key still works
      local ok = t.request(c, { headers = { authorization = "Bearer " .. CHAT_KEY } })
      assert.are.equal("ok", ok.action)
    end)

    it("is refused with 401 expired_api_key from its expiry date on, the date named", function()
      local cons = consumers()
      cons["support-chat"].keys[2].expires = day(0)
      local c = t.chain({ { name = "key-auth", config = { consumers = cons } } })
      local res = t.request(c, { headers = { authorization = "Bearer " .. CHAT_OLD } })
      assert.are.equal(401, res.status)
      assert.are.equal("expired_api_key", res.code)
      assert.are.equal("this API key expired on " .. day(0) .. "; ask for a new key", res.message)
    end)

    it("is checked on every request, also after the same worker admitted it", function()
      local cons = consumers()
      local soon = os.time() + 1
      cons["support-chat"].keys[2].expires = os.date("!%Y-%m-%dT%H:%M:%SZ", soon)
      local c = t.chain({ { name = "key-auth", config = { consumers = cons } } })
      local function code_of(key)
        local res = t.request(c, { headers = { authorization = "Bearer " .. key } })
        return res.action == "ok" and res.ctx.consumer.id or res.code
      end
      for _ = 1, 2 do
        assert.are.equal("support-chat", code_of(CHAT_KEY))
        assert.are.equal("invalid_api_key", code_of(CHAT_KEY:sub(1, -2)))
        assert.are.equal("invalid_api_key", code_of(CHAT_KEY .. "x"))
        assert.are.equal("consumer_disabled", code_of(OFF_KEY))
      end
      assert.are.equal("support-chat", code_of(CHAT_OLD))
      while os.time() < soon do require("socket").sleep(0.05) end -- the old key expires
      assert.are.equal("expired_api_key", code_of(CHAT_OLD))
      assert.are.equal("support-chat", code_of(CHAT_KEY))
    end)

    it("records which consumer was refused, and never the key", function()
      local c = chain()
      local res = t.request(c, { headers = { authorization = "Bearer " .. OFF_KEY } })
      local _, audit = t.log(c, res.ctx)
      assert.are.same({ ["key-auth"] = { consumer = "retired" } }, audit.annotations)
      local d = decision_of(res)
      assert.are.equal("deny", d.outcome)
      assert.are.equal("consumer_disabled", d.code)
      local text = require("sluice.json").encode(audit) .. res.message
      for _, k in ipairs({ OFF_KEY, CHAT_KEY }) do assert.is_nil(text:find(k, 1, true)) end
      local bad = t.request(c, { headers = { authorization = "Bearer sk-leaked-secret" } })
      assert.is_nil(bad.message:find("sk-leaked-secret", 1, true))
    end)
  end)

  describe("configured headers", function()
    it("reads only the headers policy names", function()
      local c = chain({ bearer_headers = {}, key_headers = { "X-Gateway-Key" } })
      local res = t.request(c, { headers = { ["x-gateway-key"] = BATCH_KEY } })
      assert.are.equal("batch", res.ctx.consumer.id)
      local other = t.request(c, { headers = { authorization = "Bearer " .. BATCH_KEY } })
      assert.are.equal("missing_api_key", other.code)
      assert.are.equal("this gateway needs an API key: send X-Gateway-Key: <key>", other.message)
    end)
  end)

  describe("its configuration", function()
    local function refused(config)
      local c, err = t.try_chain({ { name = "key-auth", config = config } })
      assert.is_nil(c)
      return err
    end

    it("refuses a key that is not a sha256: hash, without echoing it", function()
      local err = refused({ consumers = { a = { keys = { { hash = CHAT_KEY } } } } })
      assert.matches("config.consumers.a.keys[1].hash: expected sha256:", err, 1, true)
      assert.is_nil(err:find(CHAT_KEY, 1, true))
      err = refused({ consumers = { a = { keys = { { hash = "sha256:abc" } } } } })
      assert.matches("keys[1].hash: expected sha256:", err, 1, true)
    end)

    it("accepts a hash written in upper-case hex", function()
      local c = t.chain({ { name = "key-auth", config = { consumers = { a = { keys = {
        { hash = sha256sum(BATCH_KEY):upper():gsub("^SHA256", "sha256") } } } } } } })
      assert.are.equal("a", t.request(c, { headers = { ["api-key"] = BATCH_KEY } }).ctx.consumer.id)
    end)

    it("refuses one key hash held by two consumers, naming both places", function()
      local h = sha256sum(BATCH_KEY)
      local err = refused({ consumers = { a = { keys = { { hash = h } } },
                                          b = { keys = { { hash = sha256sum(CHAT_KEY) }, { hash = h } } } } })
      assert.matches("consumers.b.keys[2] has the same hash as consumers.a.keys[1]", err, 1, true)
    end)

    it("refuses an anonymous consumer that does not exist", function()
      local err = refused({ consumers = consumers(), anonymous = "nobody" })
      assert.matches("anonymous names 'nobody', which is not one of the consumers", err, 1, true)
    end)

    it("refuses a configuration where no header could carry a key", function()
      local err = refused({ consumers = consumers(), bearer_headers = {}, key_headers = {} })
      assert.matches("no header could carry a key", err, 1, true)
    end)

    it("refuses an invalid header name, an unknown field and a bad expiry date", function()
      assert.matches("key_headers[1]: is not an HTTP header name",
        refused({ consumers = {}, key_headers = { "x api key" } }), 1, true)
      assert.matches("consumers.a.colour: unknown field",
        refused({ consumers = { a = { colour = "red" } } }), 1, true)
      assert.matches("keys[1].expires: expected a date",
        refused({ consumers = { a = { keys = { { hash = sha256sum("k"), expires = "soon" } } } } }), 1, true)
      assert.matches("config.consumers: is required", refused({}), 1, true)
    end)
  end)
end)
