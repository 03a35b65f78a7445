-- instrument.lua — plugin source made safe to compile.
--
-- The time budget stops interpreted code with a hook (core/lua_budget.c),
-- and LuaJIT runs no hooks inside compiled code: a compiled loop would run
-- past any budget. So a plugin's source gets a budget tick wherever code
-- can repeat: at the top of every loop body (after `do` and `repeat`),
-- before every goto statement, and at the entry of every function
-- (recursion, tail calls included). A tick counts up a local and, every
-- TICKS ticks, calls core.check_budget, which raises once the call is past
-- its deadline. In compiled code that is an add and a guard; the JIT can
-- then compile plugin code like any other.
--
-- The ticks go on the lines they belong to, so error messages keep their
-- line numbers. Names starting with __sl_ are reserved for them.
local M = {}

local sub, byte, find, match, concat = string.sub, string.byte, string.find, string.match, table.concat

local TICKS = 10000
local PROLOGUE = "local __sl_n, __sl_c = 0, __sl_budget_check __sl_budget_check = nil "
local TICK = (" __sl_n = __sl_n + 1 if __sl_n > %d then __sl_n = 0 __sl_c() end "):format(TICKS)

local KEYWORDS = {}
for w in ([[and break do else elseif end false for function if in local nil not
  or repeat return then true until while]]):gmatch("%a+") do KEYWORDS[w] = true end

-- After these a `goto` starts a statement (a block opens, or a statement
-- or expression ends); after anything else (an operator, "(", ",", "=",
-- ".", ":", return, local, ...) `goto` is a name, which LuaJIT allows.
local STATEMENT_BEFORE = {
  name = true, number = true, string = true, ["..."] = true, [")"] = true, ["]"] = true,
  ["}"] = true, [";"] = true, ["::"] = true, ["do"] = true, ["then"] = true,
  ["else"] = true, ["repeat"] = true, ["end"] = true, ["break"] = true,
  ["true"] = true, ["false"] = true, ["nil"] = true,
}

-- The end of the long bracket opening at i ("[[", "[==["), or nil when
-- there is none there.
local function long_bracket(src, i)
  local eqs = match(src, "^%[(=*)%[", i)
  if not eqs then return nil end
  local _, e = find(src, "]" .. eqs .. "]", i + #eqs + 2, true)
  return e or #src
end

-- The token at i (after spaces and comments): its kind ("name", "number",
-- "string", a keyword, or the punctuation itself), where it starts and
-- ends; nil at the end of src. Trusts src to compile (its strings end).
local function token(src, i)
  local n = #src
  while i <= n do
    local _, e = find(src, "^%s+", i)
    if e then i = e + 1 end
    if sub(src, i, i + 1) ~= "--" then break end
    i = (long_bracket(src, i + 2) or find(src, "\n", i + 2, true) or n) + 1
  end
  if i > n then return nil end
  local c = byte(src, i)
  local long = c == 91 and long_bracket(src, i)
  if long then return "string", i, long end
  if c == 34 or c == 39 then
    local j = i + 1
    while j <= n do
      local d = byte(src, j)
      if d == 92 then j = j + 2 -- an escape: \", \\, \z, a backslash-newline
      elseif d == c then break
      else j = j + 1 end
    end
    return "string", i, j
  end
  local _, e = find(src, "^[%a_][%w_]*", i)
  if e then
    local word = sub(src, i, e)
    return KEYWORDS[word] and word or "name", i, e
  end
  if find(src, "^%.?%d", i) then -- 3, .5, 0x1p4, 1e-3, 12ULL
    local j = i
    local hex = find(src, "^0[xX]", i)
    repeat -- an exponent's sign belongs to the number: 1e-3, 0x1p+4
      _, e = find(src, "^[%w%.]+", j)
      j = e + 1
      local more = find(sub(src, e, e), hex and "[pP]" or "[eEpP]") and find(src, "^[%+%-]", j)
      if more then j = j + 1 end
    until not more
    return "number", i, j - 1
  end
  local three, two = sub(src, i, i + 2), sub(src, i, i + 1)
  if three == "..." then return "...", i, i + 2 end
  if two == "::" then return "::", i, i + 1 end
  return sub(src, i, i), i, i
end

-- src with ticks; or nil, message when it uses a reserved name. src must
-- be source that compiles.
function M.source(src)
  local out, last = { PROLOGUE }, 1
  local function insert(at, text)
    out[#out + 1] = sub(src, last, at - 1)
    out[#out + 1] = text
    last = at
  end
  local prev = ";" -- the start of the chunk is a statement's
  local params = 0 -- 1: after `function`, waiting for its "("; 2: inside it
  local kind, s, e = token(src, 1)
  while kind do
    local nkind, ns, ne = token(src, e + 1)
    if kind == "name" then
      local word = sub(src, s, e)
      if sub(word, 1, 5) == "__sl_" then
        return nil, ("names starting with __sl_ are reserved (%s)"):format(word)
      end
      if word == "goto" and nkind == "name" and STATEMENT_BEFORE[prev] then
        insert(s, TICK)
      end
    elseif kind == "do" or kind == "repeat" then
      insert(e + 1, TICK)
    elseif kind == "function" then
      params = 1
    elseif kind == "(" and params == 1 then
      params = 2
    elseif kind == ")" and params == 2 then -- the end of a parameter list
      params = 0
      insert(e + 1, TICK)
    end
    prev = kind
    kind, s, e = nkind, ns, ne
  end
  out[#out + 1] = sub(src, last)
  return concat(out)
end

return M
