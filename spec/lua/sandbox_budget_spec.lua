-- sandbox_budget_spec.lua — adversarial plugins against the budgets: time
-- (loops, hidden loops, C work), memory (huge and hoarded), costly patterns
-- and regexes, and errors and malformed plugins. Each must fail safely and
-- leave the runtime working. See sandbox_spec.lua for escapes.
local t = require "sluice.test"
local socket = require "socket"
local H = require "spec.helpers.sandbox"
local source, compile, attack, child_spec = H.source, H.compile, H.attack, H.child_spec
local assert_error, assert_runtime_works = H.assert_error, H.assert_runtime_works
local attempt = H.attempter(it)

describe("the plugin sandbox", function()
  setup(H.setup)
  teardown(H.teardown)

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

    attempt("stops every kind of loop: tail calls, goto, long for, through helpers and metatables", function()
      -- each in a child process: one the budget cannot stop never ends
      for _, body in ipairs({
        -- tail recursion: a loop that takes no stack
        [[local function f(n) return f(n + 1) end
          return { access = function() return f(0) end }]],
        -- mutual tail recursion
        [[local a, b
          function a(n) return b(n) end
          function b(n) return a(n + 1) end
          return { access = function() return a(0) end }]],
        -- a hot loop around a compiled helper
        [[local function step(x) return x + 1 end
          return { access = function() local x = 0 while true do x = step(x) end end }]],
        -- goto, and a numeric for that would take days
        [[return { access = function() local x = 0 ::top:: x = x + 1 goto top end }]],
        [[return { access = function() ::top:: goto top end }]],
        [[return { access = function() local x = 0 for i = 1, 1e15 do x = x + i end return x end }]],
        -- a loop in a method called through a metatable
        [[local obj = setmetatable({}, { __index = { spin = function(self) repeat self.n = (self.n or 0) + 1 until false end } })
          return { access = function() obj:spin() end }]],
      }) do
        local plugin = source(body)
        local status, text = child_spec(([[
              local chain = t.chain({ { name = %q, path = %q } }, { time_budget = 50 })
              for _ = 1, 3 do -- again: helpers the runtime calls become hot
                local t0 = socket.gettime()
                local res = t.request(chain, {})
                assert.are.equal("error", res.action)
                assert.matches("time budget", res.message, 1, true)
                assert.is_true(socket.gettime() - t0 < 1)
              end]]):format(plugin.name, plugin.path), 10)
        assert.are.equal(0, status, "not stopped (status " .. tostring(status)
          .. ", 124 = still running after 10 s with a 50 ms budget):\n" .. body .. "\n" .. text)
      end
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

