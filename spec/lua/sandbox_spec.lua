-- sandbox_spec.lua — adversarial plugins against the sandbox
-- (lua/sluice/sandbox.lua, ctx.lua, core.call_plugin). Each spec is one
-- escape or abuse attempt, written as a plugin source at test time; each
-- must fail safely (refused at load, the request fails with action
-- "error", or the attempted effect does not happen) and leave the runtime
-- working: after every attempt a normal chain (spec/fixtures/plugins:
-- add-header, canary, deny) still serves a request.
--
-- A spec that fails here is a sandbox hole: keep it failing until the
-- runtime is fixed. Budget abuse (time, memory, costly patterns, errors)
-- is in sandbox_budget_spec.lua; the shared pieces in spec/helpers/sandbox.lua.
local t = require "sluice.test"
local socket = require "socket"
local H = require "spec.helpers.sandbox"
local source, compile, attack, child_spec = H.source, H.compile, H.attack, H.child_spec
local assert_error, assert_runtime_works = H.assert_error, H.assert_runtime_works
local attempt = H.attempter(it)

describe("the plugin sandbox", function()
  setup(H.setup)
  teardown(H.teardown)

  describe("the process and the file system", function()
    attempt("cannot reach io through a global", function()
      local res, _, name = attack([[
        return { access = function() return io.open("/etc/passwd"):read("*a") end }]])
      assert_error(res, name, "attempt to index global 'io'")
    end)

    attempt("cannot reach io at load time either", function()
      local chain, err = compile([[local f = io.open("/etc/passwd") return {}]])
      assert.is_nil(chain)
      assert.matches("attempt to index global 'io'", err, 1, true)
    end)

    attempt("cannot run a command through os.execute, popen or io.popen", function()
      local marker = H.dir() .. "/pwned"
      local res, _, name = attack(([[
        return { access = function()
          local run = os.execute or (io and io.popen) or os.popen
          run("touch %s")
        end }]]):format(marker))
      assert_error(res, name)
      assert.is_nil(io.open(marker), "the command ran")
    end)

    attempt("cannot read the environment through os.getenv", function()
      local out = {}
      local res = attack([[
        local p = { schema = { out = { type = "any" } } }
        function p.access(ctx, conf)
          conf.out.getenv = os.getenv
          conf.out.ok, conf.out.value = pcall(function() return os.getenv("HOME") end)
        end
        return p]], { config = { out = out } })
      assert.are.equal("ok", res.action)
      assert.is_nil(out.getenv)
      assert.is_false(out.ok)
      assert.matches("attempt to call field 'getenv'", out.value, 1, true)
    end)

    attempt("cannot end the process or touch files through os (exit, remove, rename, tmpname)", function()
      local out = {}
      attack([[
        local p = { schema = { out = { type = "any" } } }
        function p.access(ctx, conf)
          for _, k in ipairs({ "exit", "remove", "rename", "tmpname", "execute", "getenv", "setlocale" }) do
            if os[k] ~= nil then conf.out[#conf.out + 1] = k end
          end
          os.exit(3)
        end
        return p]], { config = { out = out } })
      assert.are.same({}, out, "os functions reachable")
    end)

    attempt("keeps os.time, os.clock and os.date working", function()
      local out = {}
      local res = attack([[
        local p = { schema = { out = { type = "any" } } }
        function p.access(ctx, conf)
          conf.out.time = os.time()
          conf.out.clock = os.clock()
          conf.out.year = os.date("!%Y", 0)
        end
        return p]], { config = { out = out } })
      assert.are.equal("ok", res.action)
      assert.is_number(out.time)
      assert.is_number(out.clock)
      assert.are.equal("1970", out.year)
    end)

    attempt("cannot read files outside the secret directories through sluice.secret", function()
      -- Run in a child `sluice spec`: a crash there must not take this
      -- suite down with it.
      local plugin = source([[
        local p = { schema = { out = { type = "any" } } }
        function p.access(ctx, conf)
          for _, ref in ipairs({ "file:/etc/passwd", "file:/run/secrets/../../etc/passwd",
                                 "file:etc/passwd", "file:/proc/self/environ",
                                 "file:/run/secrets/../../../proc/self/cmdline",
                                 "file:/run/secretsX/../../etc/hostname" }) do
            local v, err = sluice.secret(ref)
            conf.out[ref] = { v, err }
          end
        end
        return p]])
      local status, text = child_spec(([[
            local out = {}
            local chain = t.chain({ { name = %q, path = %q, config = { out = out } } })
            local res = t.request(chain, {})
            assert.are.equal("ok", res.action, res.message)
            local n = 0
            for ref, r in pairs(out) do
              n = n + 1
              assert.is_nil(r[1], ref .. " was read")
              assert.matches("not in an allowed secret directory", r[2], 1, true)
            end
            assert.are.equal(6, n)]]):format(plugin.name, plugin.path))
      assert.are.equal(0, status, "the child spec failed or crashed (status " .. tostring(status)
        .. ", 139 = SIGSEGV):\n" .. text)
    end)
  end)

  describe("the Lua internals", function()
    attempt("cannot reach debug (getregistry, sethook, getupvalue)", function()
      local res, _, name = attack([[
        return { access = function() return debug.getregistry() end }]])
      assert_error(res, name, "attempt to index global 'debug'")
      res, _, name = attack([[
        return { access = function() debug.sethook() end }]])
      assert_error(res, name, "attempt to index global 'debug'")
    end)

    attempt("cannot reach ffi as a global or through require", function()
      local res, _, name = attack([[
        return { access = function() return ffi.C.system("true") end }]])
      assert_error(res, name, "attempt to index global 'ffi'")
      res, _, name = attack([[
        return { access = function() local ffi = require "ffi" ffi.cdef("int system(const char *);") end }]])
      assert_error(res, name, "require 'ffi' is not allowed in a plugin")
    end)

    attempt("cannot reach jit to turn the compiler back on (and escape the count hook)", function()
      local res, _, name = attack([[
        return { access = function() jit.on() end }]])
      assert_error(res, name, "attempt to index global 'jit'")
      res, _, name = attack([[
        return { access = function() require("jit").on() end }]])
      assert_error(res, name, "require 'jit' is not allowed in a plugin")
    end)

    attempt("cannot require os, io, ffi, debug, jit, package or the runtime's modules", function()
      local out = {}
      local res = attack([[
        local p = { schema = { out = { type = "any" } } }
        function p.access(ctx, conf)
          for _, m in ipairs({ "os", "io", "ffi", "debug", "jit", "jit.util", "package",
                               "string", "coroutine", "socket", "lfs", "sluice.runtime",
                               "sluice.sandbox", "sluice.ctx", "sluice.test", "sluice.schema",
                               "busted", "_G" }) do
            local ok, v = pcall(require, m)
            if ok then conf.out[#conf.out + 1] = m end
          end
          conf.out.package = package
        end
        return p]], { config = { out = out } })
      assert.are.equal("ok", res.action)
      assert.is_nil(out.package)
      out.package = nil
      assert.are.same({}, out, "modules a plugin could require")
    end)

    attempt("can require only the sluice services, as read-only views", function()
      local res, _, name = attack([[
        return { access = function()
          local json = require "sluice.json"
          assert(json.decode("[1]")[1] == 1)
          assert(require("sluice") == sluice)
          json.decode = function() return "pwned" end
        end }]])
      assert_error(res, name, "sluice.json is read-only")
    end)

    attempt("cannot compile code at run time (load, loadstring, dofile, loadfile)", function()
      local out = {}
      attack([[
        local p = { schema = { out = { type = "any" } } }
        function p.access(ctx, conf)
          for _, k in ipairs({ "load", "loadstring", "dofile", "loadfile", "module", "newproxy" }) do
            local f = _G[k]
            if f ~= nil then conf.out[#conf.out + 1] = k end
          end
        end
        return p]], { config = { out = out } })
      assert.are.same({}, out)
      local res, _, name = attack([[
        return { access = function() return loadstring("return io")() end }]])
      assert_error(res, name, "attempt to call global 'loadstring'")
    end)

    attempt("refuses precompiled bytecode as plugin source", function()
      local bc = string.dump(function() return { access = function() end } end)
      assert.are.equal("\27LJ", bc:sub(1, 3))
      local chain, err = compile(bc)
      assert.is_nil(chain)
      assert.matches("precompiled bytecode is not accepted", err, 1, true)
    end)

    attempt("refuses bytecode hidden behind a UTF-8 BOM or a #! line", function()
      local bc = string.dump(function() return { access = function() end } end)
      for _, prefix in ipairs({ "\239\187\191", "#!/usr/bin/env luajit\n" }) do
        local chain, err = compile(prefix .. bc)
        assert.is_nil(chain, "bytecode behind " .. ("%q"):format(prefix) .. " was loaded")
        assert.is_string(err)
      end
    end)

    attempt("cannot produce bytecode through string.dump, even through the string metatable", function()
      local out = {}
      local res = attack([[
        local p = { schema = { out = { type = "any" } } }
        function p.access(ctx, conf)
          conf.out.dump = string.dump
          conf.out.method = ("").dump
        end
        return p]], { config = { out = out } })
      assert.are.equal("ok", res.action)
      assert.is_nil(out.dump)
      assert.is_nil(out.method)
    end)

    attempt("cannot read or replace an environment (getfenv/setfenv)", function()
      local res, _, name = attack([[
        return { access = function(ctx) local env = getfenv(ctx.deny) env.x = 1 end }]])
      assert_error(res, name, "attempt to call global 'getfenv'")
      res, _, name = attack([[
        return { access = function() setfenv(1, {}) end }]])
      assert_error(res, name, "attempt to call global 'setfenv'")
    end)

    attempt("cannot drive the garbage collector (collectgarbage, gcinfo)", function()
      local res, _, name = attack([[
        return { access = function() collectgarbage("stop") end }]])
      assert_error(res, name, "attempt to call global 'collectgarbage'")
      res, _, name = attack([[
        return { access = function() return gcinfo() end }]])
      assert_error(res, name, "attempt to call global 'gcinfo'")
    end)

    attempt("cannot reach coroutines", function()
      local res, _, name = attack([[
        return { access = function() return coroutine.wrap(function() end) end }]])
      assert_error(res, name, "attempt to index global 'coroutine'")
    end)

    attempt("cannot change the globals of other plugins through _G", function()
      local out = {}
      local res = attack([[
        local p = { priority = 100, schema = { out = { type = "any" } } }
        function p.access(ctx, conf)
          conf.out.self = rawequal(_G, _G._G)
          conf.out.io = _G.io
          conf.out.os_execute = _G.os.execute
          _G.string, _G.pairs, _G.pcall, _G.tostring = nil, nil, nil, nil
          _G.sluice = nil
          setmetatable(_G, { __index = function() return "pwned" end })
        end
        return p]], { config = { out = out }, after = { { name = "canary" } } })
      assert.are.equal("ok", res.action, res.message)
      assert.are.equal("ok", res.header_map["x-canary"])
      assert.is_true(out.self)
      assert.is_nil(out.io)
      assert.is_nil(out.os_execute)
    end)
  end)

  describe("ctx and the runtime's tables", function()
    attempt("cannot tamper with ctx through rawset/rawget", function()
      local res, _, name = attack([[
        return { access = function(ctx) rawset(ctx, "deny", function() end) end }]])
      assert_error(res, name, "attempt to call global 'rawset'")
      res, _, name = attack([[
        return { access = function(ctx) return rawget(ctx, "request") end }]])
      assert_error(res, name, "attempt to call global 'rawget'")
    end)

    attempt("finds no state in ctx or ctx.request by iterating them", function()
      local out = {}
      attack([[
        local p = { schema = { out = { type = "any" } } }
        function p.access(ctx, conf)
          conf.out.ctx = next(ctx)
          conf.out.req = next(ctx.request)
          conf.out.vars = next(ctx.vars)
        end
        return p]], { config = { out = out } })
      assert.is_nil(out.ctx)
      assert.is_nil(out.req)
      assert.is_nil(out.vars)
    end)

    attempt("cannot overwrite ctx methods (ctx.deny = …) for itself or later plugins", function()
      local res, _, name = attack([[
        return { access = function(ctx) ctx.deny = function() return true end end }]])
      assert_error(res, name, "ctx.deny is read-only")
      -- swallowing the error does not help: the next plugin's deny is the real one
      res = attack([[
        return { priority = 100, access = function(ctx)
          pcall(function() ctx.deny = function() end end)
          pcall(function() ctx.request.header = function() return "forged" end end)
          pcall(function() ctx.vars = { forged = true } end)
          pcall(function() ctx.request.method = "GET" end)
        end }]], { after = { { name = "deny", config = { status = 402 } } } })
      assert.are.equal("deny", res.action)
      assert.are.equal(402, res.status)
      assert.are.equal("deny", res.plugin)
    end)

    attempt("cannot reach or replace the metatable of ctx or ctx.request", function()
      local out = {}
      attack([[
        local p = { schema = { out = { type = "any" } } }
        function p.access(ctx, conf)
          conf.out.ctx_mt = getmetatable(ctx)
          conf.out.req_mt = getmetatable(ctx.request)
          conf.out.set_ctx = pcall(setmetatable, ctx, {})
          conf.out.set_req = pcall(setmetatable, ctx.request, {})
        end
        return p]], { config = { out = out } })
      assert.is_false(out.ctx_mt)
      assert.is_false(out.req_mt)
      assert.is_false(out.set_ctx)
      assert.is_false(out.set_req)
    end)

    attempt("cannot reach the string metatable shared by every plugin", function()
      local out = {}
      attack([[
        local p = { priority = 100, schema = { out = { type = "any" } } }
        function p.access(ctx, conf)
          conf.out.mt = getmetatable("")
          conf.out.set = pcall(setmetatable, "", {})
          conf.out.poison = pcall(function() getmetatable("").__index.upper = function() return "pwned" end end)
        end
        return p]], { config = { out = out }, after = { { name = "canary" } } })
      assert.is_false(out.mt)
      assert.is_false(out.set)
      assert.is_false(out.poison)
    end)

    attempt("cannot reach or change the metatable of sluice or its services", function()
      local out = {}
      attack([[
        local p = { schema = { out = { type = "any" } } }
        function p.access(ctx, conf)
          conf.out.sluice = getmetatable(sluice)
          conf.out.json = getmetatable(sluice.json)
          conf.out.log = getmetatable(sluice.log)
          conf.out.set = pcall(setmetatable, sluice, {})
          conf.out.set_json = pcall(setmetatable, sluice.json, {})
        end
        return p]], { config = { out = out } })
      assert.is_false(out.sluice)
      assert.is_false(out.json)
      assert.is_false(out.log)
      assert.is_false(out.set)
      assert.is_false(out.set_json)
    end)

    attempt("cannot reach the JSON array/object markers shared by every plugin", function()
      local out = {}
      local res = attack([[
        local p = { priority = 100, schema = { out = { type = "any" } } }
        function p.access(ctx, conf)
          conf.out.array_mt = sluice.json.array_mt
          conf.out.object_mt = sluice.json.object_mt
          conf.out.arr = getmetatable(sluice.json.decode("[]"))
          conf.out.obj = getmetatable(sluice.json.decode("{}"))
          conf.out.empty = getmetatable(sluice.json.empty_array())
          conf.out.reset = pcall(setmetatable, sluice.json.decode("[]"), {})
          -- poisoning through a reached marker would make [] encode as {}
          local mt = getmetatable(sluice.json.empty_array())
          if type(mt) == "table" then mt.__jsontype = "object" end
        end
        return p]], { config = { out = out }, after = { { name = "canary" } } })
      assert.are.equal("ok", res.action, res.message)
      assert.is_nil(out.array_mt)
      assert.is_nil(out.object_mt)
      assert.are_not.equal("table", type(out.arr))
      assert.are_not.equal("table", type(out.obj))
      assert.are_not.equal("table", type(out.empty))
      assert.is_false(out.reset)
    end)

    attempt("cannot replace sluice.json.decode (or sluice.json) for another plugin", function()
      local res = attack([[
        return { priority = 100, access = function(ctx)
          pcall(function() sluice.json.decode = function() return { model = "forged" } end end)
          pcall(function() sluice.json = { decode = function() return {} end } end)
          pcall(function() sluice.log.info = nil end)
        end }]], { after = { { name = "canary" } } })
      assert.are.equal("ok", res.action, res.message)
      assert.are.equal("ok", res.header_map["x-canary"])
    end)

    attempt("cannot change string, table or math for another plugin", function()
      local res = attack([[
        return { priority = 100, access = function(ctx)
          string.upper = function() return "pwned" end
          string.find = function() return 99 end
          string.rep = function() return "" end
          table.concat = function() return "pwned" end
          math.floor = function() return 42 end
          math.max = nil
          bit.band = nil
          os.time = function() return 0 end
        end }]], { after = { { name = "canary" } } })
      assert.are.equal("ok", res.action, res.message)
      assert.are.equal("ok", res.header_map["x-canary"])
    end)

    attempt("cannot read another plugin's ctx.vars", function()
      local out = {}
      local res = attack([[
        local p = { priority = -200, schema = { out = { type = "any" } } }
        function p.access(ctx, conf)
          local seen = {}
          for k, v in pairs(ctx.vars) do seen[k] = v end
          conf.out.seen = seen
        end
        return p]], { config = { out = out },
          before = { { name = "vars-a", config = { tag = "secret-a", out = {} } } } })
      assert.are.equal("ok", res.action)
      assert.are.same({}, out.seen)
    end)

    attempt("cannot steal another plugin's ctx.vars through a metatable on ctx.consumer", function()
      -- The thief runs first and plants a consumer whose __index runs while
      -- the victim works (reading ctx.consumer.team, as an identity-aware
      -- plugin does) — when ctx.vars is the victim's table.
      local out = {}
      local thief, victim = source([[
        local p = { priority = 100, schema = { out = { type = "any" } } }
        function p.access(ctx, conf)
          ctx.consumer = setmetatable({}, { __index = function()
            conf.out.stolen = ctx.vars
          end })
        end
        function p.log(ctx, conf) conf.out.later = conf.out.stolen and conf.out.stolen.api_key end
        return p]]), source([[
        local p = { priority = 50 }
        function p.access(ctx)
          ctx.vars.api_key = "victim-secret"
          local team = ctx.consumer and ctx.consumer.team
        end
        return p]])
      thief.config = { out = out }
      local chain = t.chain({ thief, victim })
      local res = t.request(chain, {})
      -- refusing the planted metatable outright is a safe outcome too
      if res.action == "error" then
        assert.are.equal(thief.name, res.plugin)
      else
        assert.are.equal("ok", res.action)
      end
      t.log(chain, res.ctx, {})
      assert.is_nil(out.later, "the thief read the victim's ctx.vars.api_key in its log phase")
      assert.is_nil(out.stolen and out.stolen.api_key, "the thief read the victim's ctx.vars")
    end)

    attempt("cannot split the response through CR/LF in ctx:deny header names or values", function()
      for _, h in ipairs({ { ["x-a\nx-injected"] = "1" }, { ["x-a\r\nx-injected"] = "1" },
                           { ["x-ok"] = "1\r\nx-injected: 1" }, { ["x-ok"] = "1\nx-injected: 1" } }) do
        local k, v = next(h)
        local code = ([[
          return { access = function(ctx) return ctx:deny(429, "x", "y", { [%q] = %q }) end }]]):format(k, v)
        local res = attack(code)
        if res.action == "deny" then
          for _, s in ipairs(res.deny_headers or {}) do
            assert.is_nil(s:find("[\r\n]"), ("a deny header carries CR/LF: %q"):format(s))
          end
        else
          assert.are.equal("error", res.action)
        end
      end
    end)

    attempt("cannot make the runtime send a body it cannot encode (a cycle)", function()
      local res = attack([[
        return { access = function(ctx) local t = {} t.t = t ctx.request:set_json(t) end }]])
      assert.are.equal("error", res.action)
      assert.matches("contains itself", res.message, 1, true)
    end)
  end)

end)
