-- sandbox.lua — shared pieces of the adversarial sandbox specs
-- (spec/lua/sandbox_spec.lua, sandbox_budget_spec.lua): write an attacking
-- plugin, compile it, run it, and check the runtime still works after.
local t = require "sluice.test"
local socket = require "socket"
local assert = require "luassert"

local H = {}
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

local saved_dirs

-- busted setup/teardown for a sandbox spec file.
function H.setup()
  saved_dirs = t.plugin_dirs
  t.plugin_dirs = { FIXTURES }
  dir = os.tmpname()
  os.remove(dir)
  dir = dir .. ".sandbox"
  os.execute("mkdir -p '" .. dir .. "'")
end

function H.teardown()
  t.plugin_dirs = saved_dirs
  if dir and dir:match("^/tmp/") then os.execute("rm -rf '" .. dir .. "'") end
  collectgarbage()
end

function H.dir() return dir end

-- An it() that also checks the runtime afterwards; busted's `it` lives in
-- the spec file's environment, so the file passes it in.
function H.attempter(it)
  return function(desc, fn)
    it(desc, function()
      fn()
      assert_runtime_works()
    end)
  end
end

H.source, H.compile, H.attack, H.child_spec = source, compile, attack, child_spec
H.assert_error, H.assert_runtime_works = assert_error, assert_runtime_works
return H
