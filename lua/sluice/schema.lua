-- schema.lua — checks a plugin's configuration against its schema when a
-- policy loads, never at request time.
--
-- A schema is a map of field name → field spec:
--   { type = "string" | "number" | "integer" | "boolean" | "array" | "map"
--            | "record" | "date" | "duration" | "regex" | "any",
--     required = true, default = v, one_of = {…}, min = n, max = n,
--     elements = spec (array), values = spec (map), fields = schema (record),
--     check = function(v) return ok, err end }
-- Errors come back as (path, message); the compiler adds file and line.
local M = {}

local type, pairs, ipairs, tostring, tonumber, next = type, pairs, ipairs, tostring, tonumber, next
local floor = math.floor

local function is_array(t)
  local n = 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or floor(k) ~= k then return false end
    n = n + 1
  end
  return n == #t
end

local function join(path, key)
  if type(key) == "number" then return path .. "[" .. key .. "]" end
  if path == "" then return key end
  return path .. "." .. key
end

local check_value

local durations = { ms = 1, s = 1000, m = 60000, h = 3600000 }

-- "2026-06-30" → seconds since the epoch (UTC midnight), or nil;
-- "2026-06-30T14:00:00Z" (UTC only) → that second.
function M.parse_date(s)
  s = tostring(s)
  local y, mo, d, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then return nil end
  local secs = 0
  if rest ~= "" then
    local h, mi, sec = rest:match("^[T ](%d%d):(%d%d):(%d%d)Z$")
    if not h then return nil end
    h, mi, sec = tonumber(h), tonumber(mi), tonumber(sec)
    if h > 23 or mi > 59 or sec > 60 then return nil end
    secs = h * 3600 + mi * 60 + sec
  end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo < 1 or mo > 12 or d < 1 or d > 31 then return nil end
  -- days from civil (Howard Hinnant's algorithm), no os.time timezone games
  if mo <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (mo + 9) % 12
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return (era * 146097 + doe - 719468) * 86400 + secs
end

function M.parse_duration(v)
  if type(v) == "number" then return v end
  local n, unit = tostring(v):match("^(%d+%.?%d*)%s*(%a*)$")
  if not n then return nil end
  local mult = durations[unit == "" and "ms" or unit]
  if not mult then return nil end
  return tonumber(n) * mult
end

local checkers = {}

function checkers.string(v) if type(v) ~= "string" then return nil, "expected a string" end return v end
function checkers.boolean(v) if type(v) ~= "boolean" then return nil, "expected true or false" end return v end
function checkers.any(v) return v end
function checkers.number(v) if type(v) ~= "number" then return nil, "expected a number" end return v end
function checkers.integer(v)
  if type(v) ~= "number" or floor(v) ~= v then return nil, "expected a whole number" end
  return v
end
function checkers.date(v)
  local t = M.parse_date(v)
  if not t then return nil, "expected a date like 2026-06-30 or 2026-06-30T14:00:00Z" end
  return t
end
function checkers.duration(v)
  local ms = M.parse_duration(v)
  if not ms then return nil, "expected a duration like 250ms, 10s or 2m" end
  return ms
end
function checkers.regex(v, spec, path, errs, re)
  if type(v) ~= "string" then return nil, "expected a regular expression" end
  if re then
    local ok, err = pcall(re.find, "", v, spec.flags)
    if not ok then return nil, "invalid regular expression: " .. tostring(err) end
  end
  return v
end

function checkers.array(v, spec, path, errs, re)
  if type(v) ~= "table" or not is_array(v) then return nil, "expected a list" end
  local out = {}
  for i, e in ipairs(v) do
    out[i] = spec.elements and check_value(e, spec.elements, join(path, i), errs, re) or e
  end
  return out
end

function checkers.map(v, spec, path, errs, re)
  if type(v) ~= "table" or (next(v) ~= nil and is_array(v)) then return nil, "expected a map" end
  local out = {}
  for k, e in pairs(v) do
    if type(k) ~= "string" then
      errs[#errs + 1] = { join(path, tostring(k)), "map keys must be strings" }
    else
      out[k] = spec.values and check_value(e, spec.values, join(path, k), errs, re) or e
    end
  end
  return out
end

function checkers.record(v, spec, path, errs, re)
  if type(v) ~= "table" or (next(v) ~= nil and is_array(v)) then return nil, "expected a map" end
  return M.check_fields(v, spec.fields or {}, path, errs, re)
end

check_value = function(v, spec, path, errs, re)
  local f = checkers[spec.type or "any"]
  if not f then
    errs[#errs + 1] = { path, "schema error: unknown type '" .. tostring(spec.type) .. "'" }
    return nil
  end
  local out, err = f(v, spec, path, errs, re)
  if err then errs[#errs + 1] = { path, err }; return nil end
  if spec.one_of then
    local ok = false
    for _, allowed in ipairs(spec.one_of) do if allowed == v then ok = true end end
    if not ok then
      local names = {}
      for i, a in ipairs(spec.one_of) do names[i] = tostring(a) end
      errs[#errs + 1] = { path, "expected one of: " .. table.concat(names, ", ") }
    end
  end
  if type(out) == "number" then
    if spec.min and out < spec.min then errs[#errs + 1] = { path, "must be at least " .. spec.min } end
    if spec.max and out > spec.max then errs[#errs + 1] = { path, "must be at most " .. spec.max } end
  end
  if spec.check and out ~= nil then
    local ok, cerr = spec.check(out)
    if not ok then errs[#errs + 1] = { path, cerr or "invalid value" } end
  end
  return out
end

-- Check a map of values against a map of field specs; unknown keys are
-- errors, defaults fill what is missing.
function M.check_fields(v, fields, path, errs, re)
  local out = {}
  for k, e in pairs(v) do
    local spec = fields[k]
    if not spec then
      errs[#errs + 1] = { join(path, tostring(k)), "unknown field" }
    else
      out[k] = check_value(e, spec, join(path, k), errs, re)
    end
  end
  for k, spec in pairs(fields) do
    if v[k] == nil then
      if spec.required then
        errs[#errs + 1] = { join(path, k), "is required" }
      elseif spec.default ~= nil then
        local d = spec.default
        if type(d) == "table" then
          local copy = {}
          for dk, dv in pairs(d) do copy[dk] = dv end
          d = copy
        end
        -- defaults go through the same checks and conversions as values
        out[k] = check_value(d, spec, join(path, k), errs, re)
      end
    end
  end
  return out
end

-- Check a plugin schema itself, so a plugin author learns of a typo in the
-- schema when the plugin loads, not from a confused operator.
function M.check_schema(s, path)
  if type(s) ~= "table" then return nil, path .. ": schema must be a table" end
  for k, spec in pairs(s) do
    if type(spec) ~= "table" then return nil, path .. "." .. tostring(k) .. ": field spec must be a table" end
    if spec.type and not checkers[spec.type] then
      return nil, path .. "." .. tostring(k) .. ": unknown type '" .. tostring(spec.type) .. "'"
    end
    if spec.fields then
      local ok, err = M.check_schema(spec.fields, path .. "." .. tostring(k))
      if not ok then return nil, err end
    end
    for _, sub in ipairs({ "elements", "values" }) do
      if spec[sub] ~= nil then
        local ok, err = M.check_schema({ [sub] = spec[sub] }, path .. "." .. tostring(k))
        if not ok then return nil, err end
      end
    end
  end
  return true
end

return M
