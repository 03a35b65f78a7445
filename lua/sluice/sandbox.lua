-- sandbox.lua — the environment a plugin runs in.
--
-- Each plugin gets its own globals: safe basics, private copies of string,
-- table and math, os limited to time, and its own read-only view of the
-- sluice.* services. Nothing reaches the runtime, another plugin, the file
-- system or the process. Three things need more than leaving names out:
--   * time: a watchdog sets a count hook on a call past its deadline, which
--     stops interpreted code at its next bytecode (core.call_plugin,
--     core/lua_budget.c); LuaJIT runs no hooks in compiled code, so the
--     source gets budget ticks in every loop and function first
--     (instrument.lua) and is then compiled like any other;
--   * pcall: a plugin must not swallow the budget error, so its pcall and
--     xpcall re-raise it;
--   * Lua patterns: backtracking runs in C where no hook fires, so their cost
--     is bounded before they run (use sluice.re for long text).
local instrument = require "sluice.instrument"

local M = {}

local core
local services = {}

local type, pairs, ipairs, error, tostring, select = type, pairs, ipairs, error, tostring, select
local setmetatable, getmetatable, rawequal = setmetatable, getmetatable, rawequal
local pcall, xpcall, unpack, setfenv, loadstring = pcall, xpcall, unpack, setfenv, loadstring
local sfind, smatch, sgmatch, sgsub, sbyte, ssub = string.find, string.match, string.gmatch, string.gsub, string.byte, string.sub

local PATTERN_COST_LIMIT = 1e9

-- Quantifiers outside character classes: each one can multiply the work of
-- a backtracking match by the length of the subject. The cost of matching
-- pat on a string of length len is (len + 1) ^ exponent(pat).
local function exponent(pat)
  local q, i, n, in_set = 0, 1, #pat, false
  while i <= n do
    local c = ssub(pat, i, i)
    if c == "%" then
      local nx = ssub(pat, i + 1, i + 1)
      if not in_set and nx == "b" then q = q + 1; i = i + 3 end
      i = i + 2
    elseif in_set then
      if c == "]" then in_set = false end
      i = i + 1
    elseif c == "[" then
      in_set = true
      if ssub(pat, i + 1, i + 1) == "]" then i = i + 1 end
      i = i + 1
    else
      if c == "*" or c == "+" or c == "-" or c == "?" then q = q + 1 end
      i = i + 1
    end
  end
  return q + (ssub(pat, 1, 1) == "^" and 0 or 1)
end

-- Plugins use a handful of patterns, each on every request: their
-- exponents are kept (up to EXPONENTS_MAX patterns; then the cache starts
-- over, so a plugin building patterns from input cannot grow it).
local EXPONENTS_MAX = 512
local exponents, n_exponents = {}, 0
local function pattern_cost(pat, len)
  local e = exponents[pat]
  if not e then
    e = exponent(pat)
    if n_exponents >= EXPONENTS_MAX then exponents, n_exponents = {}, 0 end
    exponents[pat] = e
    n_exponents = n_exponents + 1
  end
  return (len + 1) ^ e
end

local depth = 0 -- > 0 while plugin code runs

local function guard(s, pat, plain)
  if depth == 0 or plain or type(s) ~= "string" or type(pat) ~= "string" then return end
  -- No length threshold: ("a?"):rep(30) is exponential on a short string.
  if pattern_cost(pat, #s) > PATTERN_COST_LIMIT then
    error("Lua pattern too costly for a " .. #s ..
      "-byte string; use sluice.re for long text", 3)
  end
end

-- table.foreach/foreachi would walk a ctx's private keys: leave them out.
local safe_table = {}
for k, v in pairs(table) do
  if k ~= "foreach" and k ~= "foreachi" then safe_table[k] = v end
end

local safe_string = {}
for k, v in pairs(string) do
  if k ~= "dump" then safe_string[k] = v end
end
function safe_string.find(s, pat, init, plain) guard(s, pat, plain); return sfind(s, pat, init, plain) end
function safe_string.match(s, pat, init) guard(s, pat); return smatch(s, pat, init) end
function safe_string.gmatch(s, pat) guard(s, pat); return sgmatch(s, pat) end
function safe_string.gsub(s, pat, repl, n) guard(s, pat); return sgsub(s, pat, repl, n) end

-- Methods called on strings ("x"):find(…) go through the string metatable:
-- point it at the guarded functions and lock it.
local string_mt = getmetatable("")
string_mt.__index = safe_string
string_mt.__metatable = false

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- C functions run where no hook can see: each plugin-facing one
-- checks the deadline first, so a loop of expensive calls stops after one.
local function checked(f)
  return function(...)
    core.check_budget()
    return f(...)
  end
end

local function checked_copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = type(v) == "function" and checked(v) or v end
  return c
end

local function readonly(t, what)
  return setmetatable({}, {
    __index = t,
    __newindex = function() error(what .. " is read-only", 2) end,
    __metatable = false,
  })
end

local function pack(...) return { n = select("#", ...), ... } end

-- next and pairs that do not show the runtime's private keys on ctx
-- objects (see ctx.lua): a plugin cannot name what it cannot enumerate.
local PRIVATE = require("sluice.ctx").PRIVATE_KEYS
local raw_next = next

local function safe_next(t, k)
  local nk, nv = raw_next(t, k)
  while nk ~= nil and PRIVATE[nk] do nk, nv = raw_next(t, nk) end
  return nk, nv
end

local function safe_pairs(t)
  if type(t) ~= "table" then error("bad argument #1 to 'pairs' (table expected)", 2) end
  return safe_next, t, nil
end

-- A pcall that cannot catch the budget error.
local function safe_pcall(f, ...)
  local r = pack(pcall(f, ...))
  if core.over_budget() then error(core.budget_error(), 0) end
  return unpack(r, 1, r.n)
end

local function safe_xpcall(f, handler, ...)
  local args = pack(...)
  -- The handler runs after the budget error too: it must not loop on.
  local function guarded(e)
    if core.over_budget() then return e end
    return handler(e)
  end
  local r = pack(xpcall(function() return f(unpack(args, 1, args.n)) end, guarded))
  if core.over_budget() then error(core.budget_error(), 0) end
  return unpack(r, 1, r.n)
end

local function safe_setmetatable(t, mt)
  if type(t) ~= "table" then error("setmetatable: a table is required", 2) end
  return setmetatable(t, mt)
end

local safe_os = { time = os.time, clock = os.clock, date = os.date, difftime = os.difftime }

-- math without randomseed: one plugin must not steer another's random().
local math_view = {}
for k, v in pairs(math) do
  if k ~= "randomseed" then math_view[k] = v end
end

-- An error value as text. A plugin may raise a table whose __tostring is
-- plugin code: convert it under the budget, and never let it escape.
local function error_text(e, budget)
  if type(e) == "string" then return e end
  if type(e) ~= "table" and type(e) ~= "userdata" then return tostring(e) end
  local ok, s = core.call_plugin(tostring, budget, e)
  if ok and type(s) == "string" then return s end
  return "the plugin raised a " .. type(e) .. " that cannot be shown"
end

-- Run plugin code under its budget: true, result or false, error text.
function M.call(fn, budget, ...)
  if type(fn) ~= "function" then return false, "not a function" end
  depth = depth + 1
  local ok, res = core.call_plugin(fn, budget, ...)
  if not ok then res = error_text(res, budget) end
  depth = depth - 1
  return ok, res
end

-- Register a runtime service under sluice.NAME (called once at start-up).
function M.service(name, mod)
  services[name] = mod
end

function M.init(c)
  core = c
end

-- sluice.shared as one plugin sees it: its keys live under its own name,
-- so no plugin can read or reset another's counters.
local function shared_view(shared, plugin_name)
  local prefix = plugin_name .. "\0"
  local view = {}
  for k, f in pairs(shared) do
    if type(f) == "function" and k ~= "flush_expired" then
      view[k] = function(key, ...)
        if type(key) ~= "string" then error("shared keys are strings", 2) end
        core.check_budget()
        return f(prefix .. key, ...)
      end
    end
  end
  return view
end

local function sluice_view(plugin_name)
  local log = {}
  for _, level in ipairs({ "error", "warn", "info", "debug" }) do
    log[level] = function(...)
      local parts = {}
      for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
      core.log(level, "plugin " .. plugin_name .. ": " .. table.concat(parts, " "))
    end
  end
  local api = {}
  for k, v in pairs(services) do
    if k == "shared" then
      api[k] = readonly(shared_view(v, plugin_name), "sluice.shared")
    elseif type(v) == "table" then
      local view = {}
      for fk, fv in pairs(v) do
        -- the JSON markers stay inside the runtime: plugins use
        -- json.empty_array() and never hold the shared metatables
        if fk ~= "array_mt" and fk ~= "object_mt" then
          view[fk] = type(fv) == "function" and checked(fv) or fv
        end
      end
      api[k] = readonly(view, "sluice." .. k)
    else
      api[k] = v
    end
  end
  api.log = readonly(log, "sluice.log")
  return readonly(api, "sluice")
end

-- A fresh environment for one plugin.
function M.env(plugin_name)
  local sl = sluice_view(plugin_name)
  local env = {
    _VERSION = _VERSION,
    assert = assert, error = error, ipairs = ipairs, next = safe_next, pairs = safe_pairs,
    select = select, tonumber = tonumber, tostring = tostring, type = type,
    unpack = unpack, rawequal = rawequal,
    getmetatable = getmetatable, setmetatable = safe_setmetatable,
    pcall = safe_pcall, xpcall = safe_xpcall,
    string = checked_copy(safe_string), table = checked_copy(safe_table),
    math = copy(math_view),
    bit = copy(bit), os = copy(safe_os),
    sluice = sl,
  }
  env.require = function(name)
    local short = type(name) == "string" and smatch(name, "^sluice%.([%w_]+)$")
    if name == "sluice" then return sl end
    if short and sl[short] then return sl[short] end
    error("require '" .. tostring(name) .. "' is not allowed in a plugin", 2)
  end
  env._G = env
  return env
end

-- Load a plugin's source in its own environment; returns its table or
-- nil, err. The chunk runs under the budget like any plugin code.
function M.load(name, path, code, time_budget)
  if sbyte(code, 1) == 27 then
    return nil, path .. ": precompiled bytecode is not accepted"
  end
  -- errors are reported against the source as written; what runs is the
  -- same source with budget ticks, on the same lines
  local fn, err = loadstring(code, "@" .. path)
  if not fn then return nil, err end
  local ticked, why = instrument.source(code)
  if not ticked then return nil, path .. ": " .. why end
  fn, err = loadstring(ticked, "@" .. path)
  if not fn then return nil, err end
  local env = M.env(name)
  env.__sl_budget_check = core.check_budget -- taken (and cleared) by the first line
  setfenv(fn, env)
  local ok, plugin = M.call(fn, time_budget)
  if not ok then return nil, path .. ": " .. tostring(plugin) end
  if type(plugin) ~= "table" then
    return nil, path .. ": a plugin must return a table"
  end
  return plugin, nil, env
end

return M
