-- instrument_spec.lua — budget ticks in plugin source: where they go, where
-- they must not, and that the code means what it meant (the budget itself
-- against compiled loops: sandbox_budget_spec.lua).
local instrument = require "sluice.instrument"

local TICK = "__sl_n = __sl_n + 1"

-- Run src as a chunk, instrumented, with a tick counter that never stops.
local function run(src, ...)
  local ticked = assert(instrument.source(src))
  local fn = assert(loadstring(ticked, "=spec"))
  local env = setmetatable({ __sl_budget_check = function() end }, { __index = _G })
  setfenv(fn, env)
  return fn(...)
end

local function ticks(src)
  local ticked = assert(instrument.source(src))
  local n, at = 0, 1
  while true do
    local _, e = ticked:find(TICK, at, true)
    if not e then return n, ticked end
    n, at = n + 1, e + 1
  end
end

describe("instrument.source", function()
  it("ticks every loop body, every function entry and every goto", function()
    assert.are.equal(1, (ticks("while x do end")))
    assert.are.equal(1, (ticks("for i = 1, 3 do end")))
    assert.are.equal(1, (ticks("for k, v in pairs(t) do end")))
    assert.are.equal(1, (ticks("repeat x = 1 until x")))
    assert.are.equal(1, (ticks("local function f(a, b) return a end")))
    assert.are.equal(1, (ticks("local f = function(...) end")))
    assert.are.equal(1, (ticks("function t.a.b:c(x) end")))
    assert.are.equal(1, (ticks("::top:: x = x + 1 if x < 3 then goto top end")))
    assert.are.equal(1, (ticks("::top:: goto top")))
    assert.are.equal(1, (ticks("local a = ...\ngoto skip\n::skip::")))
  end)

  it("leaves strings, long strings and comments alone", function()
    local src = table.concat({
      [[local a = "while do repeat function() goto"]],
      [[local b = 'do \' do']],
      "local c = [==[ do ]] repeat ]==]",
      "-- do repeat function()",
      "--[[ while x do end ]]",
      "--[=[ do ]] ]=]",
      [[local d = "a\z
         do"]],
      [[return a, b, c, d]],
    }, "\n")
    local n = ticks(src)
    assert.are.equal(0, n)
    local a, b, c, d = run(src)
    assert.are.equal("while do repeat function() goto", a)
    assert.are.equal("do ' do", b)
    assert.are.equal(" do ]] repeat ", c)
    assert.are.equal("ado", d)
  end)

  it("leaves goto alone where LuaJIT reads it as a name", function()
    local src = [[
      local goto = 1
      local t = { goto = 2 }
      t.goto = t.goto + goto
      local r = goto
      return r, t.goto, 0xE+1, 1e+2
    ]]
    assert.are.equal(0, (ticks(src)))
    local r, g, h, e = run(src)
    assert.are.same({ 1, 3, 15, 100 }, { r, g, h, e })
  end)

  it("keeps every line where it was", function()
    local src = "local x = 1\n\nlocal function f()\n  error('here')\nend\nf()\n"
    local _, ticked = ticks(src)
    assert.are.equal(select(2, src:gsub("\n", "")), select(2, ticked:gsub("\n", "")))
    local ok, err = pcall(run, src)
    assert.is_false(ok)
    assert.matches("spec:4: here", err, 1, true)
  end)

  it("does not change what code computes", function()
    local src = [[
      local out = {}
      -- numbers the lexer must not split
      out[#out + 1] = 0x1p4 + 1e-3 + 1E+2 + .5 + 3 + 0xff
      -- a continue idiom: a local between the goto and a label at block end
      for i = 1, 4 do
        if i % 2 == 0 then goto continue end
        local odd = i
        out[#out + 1] = odd
        ::continue::
      end
      local obj = {}
      function obj:twice(v) return v * 2 end
      local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end
      local function count(n, acc) if n == 0 then return acc end return count(n - 1, acc + 1) end
      local i = 0
      repeat local j = i; i = i + 1 until j >= 3
      do local scoped = 5; out[#out + 1] = scoped end
      out[#out + 1] = obj:twice(21)
      out[#out + 1] = fact(5)
      out[#out + 1] = count(50000, 0)
      out[#out + 1] = i
      out[#out + 1] = select("#", ...)
      return out
    ]]
    local out = run(src, "a", "b")
    assert.are.same({ 16 + 0.001 + 100 + 0.5 + 3 + 255, 1, 3, 5, 42, 120, 50000, 4, 2 }, out)
  end)

  it("reserves the __sl_ names for itself", function()
    local ticked, err = instrument.source("local __sl_n = 0")
    assert.is_nil(ticked)
    assert.matches("reserved", err)
    assert.is_nil((instrument.source("x.__sl_c = 1")))
  end)
end)
