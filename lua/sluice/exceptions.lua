-- exceptions.lua — the policy's `exceptions:` section: every departure
-- from policy is written down with an owner, a reason and an expiry, and
-- stops applying by itself the second it expires.
--
--   exceptions_max_lifetime: 90d          (optional; default 90 days)
--   exceptions:
--     - id: EXC-2026-014
--       owner: jane.doe@example.com
--       reason: pilot of gpt-4.1 for claims triage
--       created: 2026-11-01
--       expires: 2026-12-31T23:59:59Z
--       consumers: [claims-bot]          (consumer ids, apps or teams:
--       apps: [claims-triage]             at least one of the three)
--       teams: [claims]
--       grants:
--         models: [gpt-4.1]               public model names
--         backends: [openai-us]           backends the data boundary allows
--         quota: { tokens_per_day: 2000000 }      raised quota limits
--         limits: { max_prompt_tokens: 32000 }    relaxed request limits
--
-- Plugins ask with ctx:grant(kind, name): the id of a live exception that
-- grants it to this request's consumer (and its value), which the audit
-- record then names. Nothing is granted implicitly.
local M = {}

local schema = require "sluice.schema"
local type, pairs, ipairs, next, tostring, tonumber, floor =
  type, pairs, ipairs, next, tostring, tonumber, math.floor

local DEFAULT_MAX_LIFETIME = 90 * 86400
local FIELDS = { id = true, owner = true, reason = true, created = true, expires = true,
                 consumers = true, apps = true, teams = true, grants = true }
local LIST_GRANTS = { models = true, backends = true }
local MAP_GRANTS = { quota = true, limits = true }

-- "90d", "12h", "3600s" or seconds → seconds, or nil.
local function lifetime(v)
  if type(v) == "number" then return v end
  local n, unit = tostring(v):match("^(%d+)%s*([dhms]?)$")
  if not n then return nil end
  local mult = ({ d = 86400, h = 3600, m = 60, s = 1, [""] = 1 })[unit]
  return tonumber(n) * mult
end

local function strings(v)
  if type(v) ~= "table" or #v == 0 then return nil end
  local set = {}
  for _, s in ipairs(v) do
    if type(s) ~= "string" or s == "" then return nil end
    set[s] = true
  end
  return set
end

-- One exception → its compiled form, or nil, key path, reason.
local function compile_one(e, max_life)
  if type(e) ~= "table" then return nil, "", "expected a map with id, owner, reason, created, expires" end
  for k in pairs(e) do
    if not FIELDS[k] then return nil, "." .. tostring(k), "unknown key" end
  end
  for _, k in ipairs({ "id", "owner", "reason" }) do
    if type(e[k]) ~= "string" or e[k]:match("^%s*$") then
      return nil, "." .. k, "required: an exception needs an id, an owner and a reason"
    end
  end
  if e.created == nil then return nil, ".created", "required" end
  if e.expires == nil then return nil, ".expires", "required: every exception expires" end
  local created = schema.parse_date(e.created)
  if not created then return nil, ".created", "expected a date like 2026-06-30 or 2026-06-30T14:00:00Z" end
  local expires = schema.parse_date(e.expires)
  if not expires then return nil, ".expires", "expected a date like 2026-06-30 or 2026-06-30T14:00:00Z" end
  if expires <= created then return nil, ".expires", "must be after created" end
  if expires - created > max_life then
    return nil, ".expires", ("the exception would live %d days; policy allows at most %d")
      :format(floor((expires - created) / 86400 + 0.5), floor(max_life / 86400))
  end
  local who = {}
  for _, k in ipairs({ "consumers", "apps", "teams" }) do
    if e[k] ~= nil then
      who[k] = strings(e[k])
      if not who[k] then return nil, "." .. k, "expected a list of names" end
    end
  end
  if not (who.consumers or who.apps or who.teams) then
    return nil, "", "name who it applies to: consumers, apps or teams"
  end
  if type(e.grants) ~= "table" or next(e.grants) == nil then
    return nil, ".grants", "say what it grants: models, backends, quota or limits"
  end
  local grants = {}
  for kind, v in pairs(e.grants) do
    if LIST_GRANTS[kind] then
      grants[kind] = strings(v)
      if not grants[kind] then return nil, ".grants." .. kind, "expected a list of names" end
    elseif MAP_GRANTS[kind] then
      if type(v) ~= "table" or next(v) == nil then
        return nil, ".grants." .. tostring(kind), "expected a map of limit → value"
      end
      local m = {}
      for name, x in pairs(v) do
        if type(name) ~= "string" then return nil, ".grants." .. kind, "expected a map of limit → value" end
        m[name] = x
      end
      grants[kind] = m
    else
      return nil, ".grants." .. tostring(kind), "unknown grant (models, backends, quota, limits)"
    end
  end
  return { id = e.id, owner = e.owner, reason = e.reason, created = created, expires = expires,
           expires_text = tostring(e.expires), who = who, grants = grants }
end

-- Returns the list (maybe empty), or nil and "file:line: exceptions…: reason".
function M.compile(files, line_of)
  local list, ids = {}, {}
  local max_life, max_file = DEFAULT_MAX_LIFETIME, nil
  for _, f in ipairs(files) do
    local v = f.root.exceptions_max_lifetime
    if v ~= nil then
      max_life = lifetime(v)
      if not max_life or max_life <= 0 then
        return nil, ("%s:%d: exceptions_max_lifetime: expected a duration like 90d")
          :format(f.path, line_of(f.lines, f.root, "exceptions_max_lifetime"))
      end
      max_file = f.path
    end
  end
  for _, f in ipairs(files) do
    local section = f.root.exceptions
    if section ~= nil then
      if type(section) ~= "table" then
        return nil, ("%s:%d: exceptions: expected a list"):format(f.path, line_of(f.lines, f.root, "exceptions"))
      end
      for i, e in ipairs(section) do
        local c, path, why = compile_one(e, max_life)
        if c and ids[c.id] then c, path, why = nil, ".id", "the id '" .. c.id .. "' is used twice" end
        if not c then
          local key = path:match("^%.([%w_]+)")
          local l = type(e) == "table" and key and line_of(f.lines, e, key) or 0
          if l == 0 then l = line_of(f.lines, section, i) end
          return nil, ("%s:%d: exceptions[%d]%s: %s"):format(f.path, l, i, path, why)
        end
        ids[c.id] = true
        list[#list + 1] = c
      end
    end
  end
  list.max_lifetime, list.max_lifetime_from = max_life, max_file
  return list
end

local function applies(e, consumer)
  local w = e.who
  return (w.consumers and consumer.id and w.consumers[consumer.id]) or
    (w.apps and consumer.app and w.apps[consumer.app]) or
    (w.teams and consumer.team and w.teams[consumer.team]) or false
end

-- The first live exception granting `name` under `kind` to `consumer` at
-- `now`: id, value (true for models and backends). nil when none.
function M.find(list, consumer, kind, name, now)
  if not list or #list == 0 or type(consumer) ~= "table" then return nil end
  for _, e in ipairs(list) do
    local g = e.grants[kind]
    if g and g[name] ~= nil and now < e.expires and now >= e.created and applies(e, consumer) then
      return e.id, g[name]
    end
  end
  return nil
end

-- Live exceptions at `now`, and those of them expiring within `soon`
-- seconds: { { id, owner, reason, expires, days_left, grants } }.
function M.live(list, now, soon)
  local out = {}
  for _, e in ipairs(list or {}) do
    if now < e.expires then
      local grants = {}
      for kind, g in pairs(e.grants) do
        local names = {}
        for n in pairs(g) do names[#names + 1] = n end
        table.sort(names)
        grants[kind] = names
      end
      out[#out + 1] = { id = e.id, owner = e.owner, reason = e.reason, expires = e.expires_text,
                        seconds_left = e.expires - now, expiring = e.expires - now <= soon,
                        grants = grants }
    end
  end
  table.sort(out, function(a, b) return a.seconds_left < b.seconds_left end)
  return out
end

return M
