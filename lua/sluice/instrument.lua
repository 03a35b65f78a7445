-- instrument.lua — plugin source made safe to compile.
--
-- The time budget stops interpreted code with a hook (core/lua_budget.c),
-- and LuaJIT runs no hooks inside compiled code: a compiled loop would run
-- past any budget. So a plugin's source gets a budget tick wherever code
-- can repeat: at the top of every loop body (after `do` and `repeat`),
-- before every `goto`, and at the entry of every function (recursion,
-- tail calls included). A tick counts down a local and, every TICKS
-- ticks, asks core.check_budget, which raises once the call is past its
-- deadline. In compiled code that is a decrement and a guard; the JIT can
-- then compile plugin code like any other.
--
-- The ticks go on the lines they belong to, so error messages keep their
-- line numbers. Names starting with __sl_ are reserved for them.
local M = {}

local sub, byte, find, match, concat = string.sub, string.byte, string.find, string.match, table.concat

local TICKS = 10000
local PROLOGUE = "local __sl_n, __sl_c = 0, __sl_budget_check __sl_budget_check = nil "
local TICK = (" __sl_n = __sl_n + 1 if __sl_n > %d then __sl_n = 0 __sl_c() end "):format(TICKS)

-- The end of the long bracket opening at i ("[[", "[==["), or nil when
-- there is none there.
local function long_bracket(src, i)
  local eqs = match(src, "^%[(=*)%[", i)
  if not eqs then return nil end
  local close = "]" .. eqs .. "]"
  local _, e = find(src, close, i + #eqs + 2, true)
  return e or #src
end

-- src with ticks; or nil, message when it uses a reserved name. src must
-- be source that compiles (the lexing below trusts its strings to end).
function M.source(src)
  local out, last = { PROLOGUE }, 1
  local function insert(at, text)
    out[#out + 1] = sub(src, last, at - 1)
    out[#out + 1] = text
    last = at
  end
  local i, n = 1, #src
  local params = 0 -- 1: after `function`, waiting for its "("; 2: inside it
  while i <= n do
    local c = byte(src, i)
    if c == 45 and byte(src, i + 1) == 45 then -- "--": a comment
      local e = long_bracket(src, i + 2)
      if e then
        i = e + 1
      else
        i = (find(src, "\n", i + 2, true) or n) + 1
      end
    elseif c == 91 and long_bracket(src, i) then -- "[[", "[=[": a long string
      i = long_bracket(src, i) + 1
    elseif c == 34 or c == 39 then -- a quoted string (the source compiled: it ends)
      local j = i + 1
      while j <= n do
        local d = byte(src, j)
        if d == 92 then
          j = j + 2 -- an escape: \", \\, \z, a backslash-newline
        elseif d == c then
          break
        else
          j = j + 1
        end
      end
      i = j + 1
    elseif find(src, "^[%a_]", i) then -- a name or a keyword
      local _, e = find(src, "^[%w_]+", i)
      local word = sub(src, i, e)
      if sub(word, 1, 5) == "__sl_" then
        return nil, ("names starting with __sl_ are reserved (%s)"):format(word)
      end
      if word == "do" or word == "repeat" then
        insert(e + 1, TICK)
      elseif word == "goto" then
        insert(i, TICK)
      elseif word == "function" then
        params = 1
      end
      i = e + 1
    elseif find(src, "^%.?%d", i) then -- a number: 3, .5, 0x1p4, 1e-3, 12ULL
      local j = i
      while j <= n do
        local _, e = find(src, "^[%w%.]+", j)
        if not e then break end
        j = e + 1
        if find(sub(src, e, e), "[eEpP]") and find(src, "^[%+%-]", j) then j = j + 1 else break end
      end
      i = j
    else
      if c == 40 and params == 1 then
        params = 2
      elseif c == 41 and params == 2 then -- ")" ends a parameter list
        params = 0
        insert(i + 1, TICK)
      end
      i = i + 1
    end
  end
  out[#out + 1] = sub(src, last)
  return concat(out)
end

return M
