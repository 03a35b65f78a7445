-- sandbox_spec.lua — adversarial plugins against the sandbox
-- (lua/sluice/sandbox.lua, ctx.lua, core.call_plugin). Each spec is one
-- escape or abuse attempt, written as a plugin source at test time; each
-- must fail safely (refused at load, the request fails with action
-- "error", or the attempted effect does not happen) and leave the runtime
-- working: after every attempt a normal chain (spec/fixtures/plugins:
-- add-header, canary, deny) still serves a request.
--
-- A spec that fails here is a sandbox hole: keep it failing until the
-- runtime is fixed.
local t = require "sluice.test"
local socket = require "socket"

local FIXTURES = "spec/fixtures/plugins"

local dir, seq = nil, 0

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- A plugin item for `code`, written as DIR/attack-N.lua.
local function source(code)
  seq = seq + 1
  local name = "attack-" .. seq
  local path = dir .. "/" .. name .. ".lua"
  write(path, code)
  return { name = name, path = path }
end

-- Compile `code` as a plugin: chain or nil, err. opts: config, time_budget,
-- before / after (lists of fixture items around the attacker), fail_open.
local function compile(code, opts)
  opts = opts or {}
  local item = source(code)
  item.config, item.fail_open = opts.config, opts.fail_open
  local items = {}
  for _, it in ipairs(opts.before or {}) do items[#items + 1] = it end
  items[#items + 1] = item
  for _, it in ipairs(opts.after or {}) do items[#items + 1] = it end
  local t0 = socket.gettime()
  local chain, err = t.try_chain(items, { time_budget = opts.time_budget or 100 })
  return chain, err, socket.gettime() - t0, item.name
end

-- Compile (must succeed) and run one request: res, seconds, plugin name.
local function attack(code, opts)
  opts = opts or {}
  local chain, err, _, name = compile(code, opts)
  assert(chain, "the attack plugin did not compile: " .. tostring(err))
  local t0 = socket.gettime()
  local ok, res = pcall(t.request, chain, opts.request or {
    method = "POST", path = "/v1/chat/completions",
    headers = { ["content-type"] = "application/json" },
    json = { model = "gpt-4o", messages = { { role = "user", content = "hi" } } } })
  local dt = socket.gettime() - t0
  assert(ok, "the runtime raised instead of failing the request: " .. tostring(res))
  return res, dt, name, chain
end

-- Run `body` as the single spec of a child `sluice spec` process (for an
-- attack that could crash or hang the state it runs in): exit status (0
-- passed, 124 timed out, 139 crashed) and output.
local function child_spec(body, timeout)
  seq = seq + 1
  local path = dir .. "/child" .. seq .. "_spec.lua"
  write(path, 'local t = require "sluice.test"\nlocal socket = require "socket"\n'
    .. 'describe("child", function() it("runs", function()\n' .. body .. '\nend) end)\n')
  local bin = os.getenv("SLUICE_BIN") or "./build/sluice"
  local log = path .. ".log"
  local ok, _, code = os.execute(("timeout -k 1 %d %q spec %q >%q 2>&1"):format(timeout or 10, bin, path, log))
  local status = type(ok) == "number" and (ok >= 256 and math.floor(ok / 256) or ok) or code
  local f = io.open(log)
  local text = f and f:read("*a") or ""
  if f then f:close() end
  return status, text
end

local function assert_error(res, name, pattern)
  assert.are.equal("error", res.action, "the attack was not stopped")
  assert.are.equal(name, res.plugin)
  if pattern then assert.matches(pattern, res.message, 1, true) end
end

-- The runtime still serves a normal request with intact builtins.
local function assert_runtime_works()
  local chain = t.chain({
    { name = "add-header", config = { header = "x-after", value = "1" } },
    { name = "canary" },
  })
  local res = t.request(chain, { json = { model = "m" }, headers = { ["content-type"] = "application/json" } })
  assert.are.equal("ok", res.action, "a normal request failed after the attack: " .. tostring(res.message))
  assert.are.equal("ok", res.header_map["x-canary"])
  assert.are.equal("1", res.header_map["x-after"])
  local denied = t.request(t.chain({ { name = "deny", config = {} } }), {})
  assert.are.equal("deny", denied.action)
  -- the runtime's own string functions are not left guarded
  assert.are.equal(1, (("a"):rep(200)):find("a*a*a*b*"))
end

-- it() that also checks the runtime afterwards.
local function attempt(desc, fn)
  it(desc, function()
    fn()
    assert_runtime_works()
  end)
end

describe("the plugin sandbox", function()
  local saved_dirs

  setup(function()
    saved_dirs = t.plugin_dirs
    t.plugin_dirs = { FIXTURES }
    dir = os.tmpname()
    os.remove(dir)
    dir = dir .. ".sandbox"
    os.execute("mkdir -p '" .. dir .. "'")
  end)

  teardown(function()
    t.plugin_dirs = saved_dirs
    if dir and dir:match("^/tmp/") then os.execute("rm -rf '" .. dir .. "'") end
    collectgarbage()
  end)

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
      local marker = dir .. "/pwned"
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

  describe("time", function()
    attempt("stops `while true do end` with the time budget", function()
      local res, dt, name = attack([[
        return { access = function() while true do end end }]], { time_budget = 50 })
      assert_error(res, name, "plugin exceeded its time budget (50 ms)")
      assert.is_true(dt < 1, ("took %.3fs"):format(dt))
    end)

    attempt("stops an infinite loop hidden inside pcall", function()
      local res, dt, name = attack([[
        return { access = function()
          while true do pcall(function() while true do end end) end
        end }]], { time_budget = 50 })
      assert_error(res, name, "time budget")
      assert.is_true(dt < 1, ("took %.3fs"):format(dt))
    end)

    attempt("stops an infinite loop inside xpcall with a looping handler", function()
      -- in a child process: if the budget cannot stop it, it never ends
      local plugin = source([[
        return { access = function()
          while true do
            xpcall(function() while true do end end, function() while true do end end)
          end
        end }]])
      local status, text = child_spec(([[
            local chain = t.chain({ { name = %q, path = %q } }, { time_budget = 50 })
            local t0 = socket.gettime()
            local res = t.request(chain, {})
            assert.are.equal("error", res.action)
            assert.matches("time budget", res.message, 1, true)
            assert.is_true(socket.gettime() - t0 < 1)]]):format(plugin.name, plugin.path), 5)
      assert.are.equal(0, status, "the request was not stopped (status " .. tostring(status)
        .. ", 124 = still running after 5 s with a 50 ms budget):\n" .. text)
    end)

    attempt("stops an infinite loop in the plugin's main chunk at load", function()
      local chain, err, dt = compile([[while true do end]], { time_budget = 50 })
      assert.is_nil(chain)
      assert.matches("time budget", err, 1, true)
      assert.is_true(dt < 1, ("took %.3fs"):format(dt))
    end)

    attempt("stops an infinite loop in init", function()
      local chain, err, dt = compile([[
        return { init = function() while true do end end, access = function() end }]], { time_budget = 50 })
      assert.is_nil(chain)
      assert.matches("init failed: plugin exceeded its time budget", err, 1, true)
      assert.is_true(dt < 1, ("took %.3fs"):format(dt))
    end)

    attempt("stops infinite loops in body_filter and log too", function()
      local chain = assert(compile([[
        return {
          body_filter = function() while true do end end,
          log = function() while true do end end,
        }]], { time_budget = 50 }))
      local res = t.request(chain, {})
      local t0 = socket.gettime()
      local out, plugin, msg = t.body_filter(chain, res.ctx, "data", true)
      assert.are.equal("error", out)
      assert.matches("time budget", msg, 1, true)
      t.log(chain, res.ctx, {})
      assert.is_true(socket.gettime() - t0 < 2)
      assert.is_string(plugin)
    end)

    attempt("cannot outrun the budget with a catastrophic Lua pattern on a long string", function()
      for _, call in ipairs({ 's:find("a*a*a*a*b")', 's:match(".-.-.-b")', 'string.gsub(s, "a*a*a*b", "")',
                              'for x in s:gmatch("a*a*a*b") do end' }) do
        local res, dt, name = attack(([[
          return { access = function() local s = ("a"):rep(5000) %s end }]]):format(call),
          { time_budget = 50 })
        assert_error(res, name, "Lua pattern too costly for a 5000-byte string; use sluice.re for long text")
        assert.is_true(dt < 1, call .. (" took %.3fs"):format(dt))
      end
    end)

    attempt("cannot outrun the budget with an exponential Lua pattern on a short string", function()
      -- 24 x "a?" then 24 x "a" against 24 a's backtracks ~2^24 times in C,
      -- where the count hook never fires; 2^40 would take hours.
      local res, dt, name = attack([[
        return { access = function()
          local s = ("a"):rep(24)
          return s:find(("a?"):rep(24) .. ("a"):rep(24))
        end }]], { time_budget = 50 })
      assert.is_true(dt < 0.5, ("one request ran %.3fs under a 50 ms budget"):format(dt))
      assert_error(res, name)
    end)

    attempt("cannot outrun the budget by looping over expensive C calls (sha256 of 20 MB)", function()
      -- ~100 instructions in all: the count hook (every 1000) never fires.
      local res, dt, name = attack([[
        return { access = function()
          local s = ("a"):rep(2e7)
          for i = 1, 10 do sluice.hash.sha256(s) end
        end }]], { time_budget = 50 })
      assert.is_true(dt < 0.5, ("one request ran %.3fs under a 50 ms budget"):format(dt))
      assert_error(res, name, "time budget")
    end)

    attempt("refuses a catastrophic regex through sluice.re with the match limit", function()
      local res, dt, name = attack([[
        return { access = function() return sluice.re.find(("a"):rep(40) .. "!", "^(a+)+$") end }]],
        { time_budget = 1000 })
      assert_error(res, name, "regex match limit exceeded")
      assert.is_true(dt < 1)
    end)

    attempt("cannot run code outside the budget through a metatable on the plugin table", function()
      local chain, err, dt = compile([[
        local spun = false
        return setmetatable({}, { __index = function(_, k)
          if spun then return nil end
          spun = true
          local t0 = os.clock()
          while os.clock() - t0 < 0.3 do end
        end })]], { time_budget = 50 })
      assert.is_true(dt < 0.2, ("loading ran %.3fs of plugin code under a 50 ms budget"):format(dt))
      if chain then
        local res, rdt = attack([[return {}]])
        assert.is_true(rdt < 0.3)
        assert.is_truthy(res)
      else
        assert.is_string(err)
      end
    end)

    attempt("cannot run code outside the budget through a schema check function", function()
      local chain, err, dt = compile([[
        return { schema = { x = { type = "string", check = function()
          local t0 = os.clock()
          while os.clock() - t0 < 0.3 do end
          return true
        end } } }]], { time_budget = 50, config = { x = "v" } })
      assert.is_true(dt < 0.2, ("the check ran %.3fs under a 50 ms budget"):format(dt))
      assert.is_nil(chain)
      assert.matches("time budget", err, 1, true)
    end)
  end)

  describe("memory", function()
    attempt("stops a huge allocation with the memory budget", function()
      local res, _, name = attack([[
        return { access = function() local s = string.rep("x", 2^30) return #s end }]])
      assert_error(res, name, "not enough memory")
    end)

    attempt("stops a table growing forever with the memory budget", function()
      local res, dt, name = attack([[
        return { access = function()
          local t, i = {}, 0
          while true do i = i + 1; t[i] = ("x"):rep(1000) .. i end
        end }]], { time_budget = 10000 })
      assert_error(res, name, "not enough memory")
      assert.is_true(dt < 5)
    end)

    attempt("cannot hoard memory across requests beyond the budget", function()
      -- each request keeps 8 MB alive in the plugin's own upvalue; the
      -- per-call budget (64 MiB, relative to what the state already holds)
      -- alone lets that grow without end
      local chain = assert(compile([[
        local hoard = {}
        return { access = function() hoard[#hoard + 1] = ("x"):rep(8e6) .. #hoard end }]]))
      local failed = false
      for _ = 1, 20 do -- 160 MB: two and a half times the budget
        local res = t.request(chain, {})
        if res.action == "error" then
          assert.matches("not enough memory", res.message, 1, true)
          failed = true
          break
        end
      end
      chain = nil
      collectgarbage()
      assert.is_true(failed, "20 requests kept 160 MB alive in one plugin: none was refused")
    end)

    attempt("catches deep recursion as a stack overflow", function()
      local res, _, name = attack([[
        local function f(n) return 1 + f(n + 1) end
        return { access = function() return f(1) end }]])
      assert_error(res, name, "stack overflow")
    end)

    attempt("catches recursion through metamethods (the C stack)", function()
      local res, _, name = attack([[
        return { access = function()
          local t = setmetatable({}, { __index = function(t, k) return t[k] end })
          return t.x
        end }]], { time_budget = 2000 })
      assert_error(res, name, "stack overflow")
    end)

    attempt("refuses to unpack a huge range", function()
      local res, _, name = attack([[
        return { access = function() return unpack({}, 1, 1e8) end }]])
      assert_error(res, name, "too many results to unpack")
    end)
  end)

  describe("errors and malformed plugins", function()
    attempt("fails the request with an error object's __tostring", function()
      local res, _, name = attack([[
        return { access = function()
          error(setmetatable({}, { __tostring = function() return "custom failure" end }))
        end }]])
      assert_error(res, name)
      assert.are.equal("custom failure", res.message)
    end)

    attempt("fails the request for an error object without __tostring, or a nil error", function()
      local res, _, name = attack([[return { access = function() error({ code = 1 }) end }]])
      assert_error(res, name, "table: ")
      res, _, name = attack([[return { access = function() error() end }]])
      assert_error(res, name, "nil")
    end)

    attempt("fails the request naming the plugin when an error object's __tostring raises", function()
      local res, _, name = attack([[
        return { access = function()
          error(setmetatable({}, { __tostring = function() error("no string for you") end }))
        end }]])
      assert_error(res, name)
    end)

    attempt("cannot run code outside the budget through an error object's __tostring", function()
      local res, dt = attack([[
        return { access = function()
          error(setmetatable({}, { __tostring = function()
            local t0 = os.clock()
            while os.clock() - t0 < 0.3 do end
            return "slow"
          end }))
        end }]], { time_budget = 50 })
      assert.is_true(dt < 0.2, ("__tostring ran %.3fs outside the 50 ms budget"):format(dt))
      assert.are.equal("error", res.action)
    end)

    attempt("cannot run code outside the budget through a deny header's __tostring", function()
      local res, dt = attack([[
        return { access = function(ctx)
          return ctx:deny(429, "slow", "slow", { ["retry-after"] = setmetatable({}, { __tostring = function()
            local t0 = os.clock()
            while os.clock() - t0 < 0.3 do end
            return "1"
          end }) })
        end }]], { time_budget = 50 })
      assert.is_true(dt < 0.2, ("__tostring ran %.3fs outside the 50 ms budget"):format(dt))
      assert.is_truthy(res.action)
    end)

    attempt("refuses a plugin whose source does not return a table", function()
      for _, src in ipairs({ "return 42", "return 'plugin'", "return nil", "return function() end", "" }) do
        local chain, err = compile(src)
        assert.is_nil(chain, src)
        assert.matches("a plugin must return a table", err, 1, true)
      end
    end)

    attempt("refuses a phase that is not a function (a string, or a callable table)", function()
      local chain, err = compile([[return { access = "deny everything" }]])
      assert.is_nil(chain)
      assert.matches("access must be a function", err, 1, true)
      chain, err = compile([[return { log = setmetatable({}, { __call = function() end }) }]])
      assert.is_nil(chain)
      assert.matches("log must be a function", err, 1, true)
    end)

    attempt("refuses a plugin that declares another plugin's name", function()
      local chain, err = compile([[return { name = "deny", access = function() end }]])
      assert.is_nil(chain)
      assert.matches("declares name 'deny'", err, 1, true)
    end)

    attempt("refuses a priority that is not a number", function()
      local chain, err = compile([[return { priority = "1000", access = function() end }]])
      assert.is_nil(chain)
      assert.matches("priority must be a number", err, 1, true)
    end)

    attempt("refuses a syntax error with its line", function()
      local chain, err = compile("return {\n  access = function( end\n}")
      assert.is_nil(chain)
      assert.matches(":2:", err, 1, true)
    end)

    attempt("keeps the compiled phase when a plugin removes its own phase function", function()
      -- phases are taken from the plugin table once, at compile time
      local chain = assert(compile([[
        local p = {}
        function p.access(ctx) p.access = nil; ctx.request:set_header("x-ran", "yes") end
        return p]]))
      assert.are.equal("ok", t.request(chain, {}).action)
      local ok, res = pcall(t.request, chain, {})
      assert.is_true(ok, "the runtime raised: " .. tostring(res))
      assert.are.equal("ok", res.action)
      assert.are.equal("yes", res.header_map["x-ran"])
    end)
  end)
end)
