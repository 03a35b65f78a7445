-- diff.lua — what a policy change means in governance terms, for the
-- admin API (POST /admin/policy/diff, changes, the admin audit log):
-- backends added, removed or changed; models allowed, blocked or
-- deprecated; consumers and quotas changed; exceptions added and expiring;
-- plugins added, removed, reconfigured or with new code. And whether the
-- change needs a second person (four-eyes) before it may be published.
--
-- A policy arrives as the admin room pushes it (core/admin_policy.c):
--   { version = id, files = { { path = "policies/x.yaml", root = tree } },
--     plugins = { name = { sha256 = hex } } }
-- Only facts leave this module: names, field names, dates and limits;
-- never a credential (backends hold references, and even those are
-- reported only as "credentials changed").
local json = require "sluice.json"

local M = {}

local type, pairs, ipairs, tostring, sort, concat =
  type, pairs, ipairs, tostring, table.sort, table.concat

-- Built-in four-eyes rules: a new or changed backend, a changed credential
-- reference or data class, a plugin taken out of the chain. A policy adds
-- kinds with governance.require_approval (read from the live version: a
-- change cannot lift the rule that governs it).
local ALWAYS = { backends = true, credentials = true, data_classes = true,
                 plugins_removed = true }

local AUTH_PLUGINS = { ["key-auth"] = "consumers", ["jwt-auth"] = "issuers" }

local function list()
  return setmetatable({}, json.array_mt)
end

local function push(l, v) l[#l + 1] = v end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t or {}) do ks[#ks + 1] = k end
  sort(ks, function(a, b) return tostring(a) < tostring(b) end)
  return ks
end

local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

-- ---- one view of a policy's files ------------------------------------------

local function view(doc)
  local v = { backends = {}, models = {}, chain = {}, exceptions = {},
              require = {}, plugins = doc and doc.plugins or {} }
  for _, f in ipairs(doc and doc.files or {}) do
    local r = type(f.root) == "table" and f.root or {}
    for name, b in pairs(type(r.backends) == "table" and r.backends or {}) do
      v.backends[name] = b
    end
    for name, m in pairs(type(r.models) == "table" and r.models or {}) do
      v.models[name] = m
    end
    if r.default_backend ~= nil then v.default_backend = r.default_backend end
    for _, item in ipairs(type(r.plugins) == "table" and r.plugins or {}) do
      if type(item) == "table" and type(item.name) == "string" then
        push(v.chain, item)
      end
    end
    for _, e in ipairs(type(r.exceptions) == "table" and r.exceptions or {}) do
      if type(e) == "table" and e.id ~= nil then push(v.exceptions, e) end
    end
    local g = type(r.governance) == "table" and r.governance or {}
    for _, kind in ipairs(type(g.require_approval) == "table" and g.require_approval or {}) do
      v.require[kind] = true
    end
  end
  return v
end

-- The enabled chain entries by name (a plugin named twice keeps its first).
local function chain_by_name(v)
  local by, order = {}, {}
  for _, item in ipairs(v.chain) do
    if item.enabled ~= false and not by[item.name] then
      by[item.name] = item
      push(order, item.name)
    end
  end
  return by, order
end

-- ---- sections -----------------------------------------------------------------

local BACKEND_FIELDS = { "provider", "url", "region", "data_classes", "credentials",
                         "tls_verify", "ca_file", "timeouts", "api_version" }

local function diff_backends(o, n, out, why)
  local d = { added = list(), removed = list(), changed = list() }
  for _, name in ipairs(sorted_keys(n.backends)) do
    local nb, ob = n.backends[name], o.backends[name]
    if ob == nil then
      push(d.added, name)
      push(out, "backend " .. name .. " added")
      why.backends = true
      if type(nb) == "table" and nb.credentials ~= nil then why.credentials = true end
      if type(nb) == "table" and nb.data_classes ~= nil then why.data_classes = true end
    elseif not same(ob, nb) then
      local fields = list()
      for _, f in ipairs(BACKEND_FIELDS) do
        local a, b = type(ob) == "table" and ob[f], type(nb) == "table" and nb[f]
        if not same(a, b) then push(fields, f) end
      end
      push(d.changed, { name = name, fields = fields })
      push(out, "backend " .. name .. " changed: " .. concat(fields, ", "))
      why.backends = true
      for _, f in ipairs(fields) do
        if f == "credentials" then why.credentials = true end
        if f == "data_classes" then why.data_classes = true end
      end
    end
  end
  for _, name in ipairs(sorted_keys(o.backends)) do
    if n.backends[name] == nil then
      push(d.removed, name)
      push(out, "backend " .. name .. " removed")
    end
  end
  if not same(o.default_backend, n.default_backend) then
    d.default = { before = o.default_backend, after = n.default_backend }
    push(out, ("default backend %s -> %s"):format(tostring(o.default_backend),
      tostring(n.default_backend)))
    why.backends = true
  end
  return d
end

local function diff_models(o, n, out, why)
  local d = { allowed = list(), blocked = list(), deprecated = list(), changed = list() }
  for _, name in ipairs(sorted_keys(n.models)) do
    local nm, om = n.models[name], o.models[name]
    nm = type(nm) == "table" and nm or {}
    if om == nil then
      push(d.allowed, name)
      push(out, "model " .. name .. " allowed")
    else
      om = type(om) == "table" and om or {}
      if not same(om.deprecated, nm.deprecated) or not same(om.sunset, nm.sunset)
        or not same(om.replacement, nm.replacement) then
        push(d.deprecated, { name = name, deprecated = nm.deprecated,
                             sunset = nm.sunset, replacement = nm.replacement })
        push(out, ("model %s deprecated %s, sunset %s%s"):format(name,
          tostring(nm.deprecated or "-"), tostring(nm.sunset or "-"),
          nm.replacement and (", use " .. tostring(nm.replacement)) or ""))
      end
      if not same(om.targets, nm.targets) or not same(om.aliases, nm.aliases) then
        push(d.changed, name)
        push(out, "model " .. name .. " routing changed")
      end
    end
  end
  for _, name in ipairs(sorted_keys(o.models)) do
    if n.models[name] == nil then
      push(d.blocked, name)
      push(out, "model " .. name .. " blocked")
    end
  end
  if #d.allowed + #d.blocked + #d.deprecated + #d.changed > 0 then why.models = true end
  return d
end

-- Consumers of the auth plugins: key-auth's consumers map, jwt-auth's
-- issuers (by issuer). Keys are reported as "keys" changed, never shown.
local function consumers_of(v)
  local by = chain_by_name(v)
  local out = {}
  for plugin, field in pairs(AUTH_PLUGINS) do
    local conf = by[plugin] and by[plugin].config
    local set = type(conf) == "table" and conf[field]
    if type(set) == "table" then
      if field == "issuers" then
        for _, iss in ipairs(set) do
          if type(iss) == "table" and iss.issuer then out[plugin .. ":" .. tostring(iss.issuer)] = iss end
        end
      else
        for name, c in pairs(set) do out[plugin .. ":" .. tostring(name)] = c end
      end
    end
  end
  return out
end

local function diff_consumers(o, n, out, why)
  local oc, nc = consumers_of(o), consumers_of(n)
  local d = { added = list(), removed = list(), changed = list() }
  for _, k in ipairs(sorted_keys(nc)) do
    if oc[k] == nil then
      push(d.added, k)
      push(out, "consumer " .. k .. " added")
    elseif not same(oc[k], nc[k]) then
      local fields = list()
      local a, b = type(oc[k]) == "table" and oc[k] or {}, type(nc[k]) == "table" and nc[k] or {}
      local seen = {}
      for f in pairs(a) do seen[f] = true end
      for f in pairs(b) do seen[f] = true end
      for _, f in ipairs(sorted_keys(seen)) do
        if not same(a[f], b[f]) then push(fields, f) end
      end
      push(d.changed, { name = k, fields = fields })
      push(out, "consumer " .. k .. " changed: " .. concat(fields, ", "))
    end
  end
  for _, k in ipairs(sorted_keys(oc)) do
    if nc[k] == nil then
      push(d.removed, k)
      push(out, "consumer " .. k .. " removed")
    end
  end
  if #d.added + #d.removed + #d.changed > 0 then why.consumers = true end
  return d
end

local function quota_conf(v)
  local by = chain_by_name(v)
  local conf = by.quota and by.quota.config
  return type(conf) == "table" and conf or nil
end

local function limit_label(l, i)
  if type(l) ~= "table" then return "limits[" .. i .. "]" end
  if l.name then return tostring(l.name) end
  return ("%s per %s (%s)"):format(tostring(l.by), tostring(l.period or "minute"),
    l.cost and "cost" or l.tokens and "tokens" or "requests")
end

local function diff_quotas(o, n, out, why)
  local oq, nq = quota_conf(o), quota_conf(n)
  local d = { changed = list() }
  if same(oq, nq) then return d end
  local ol, nl = {}, {}
  for i, l in ipairs(oq and oq.limits or {}) do ol[limit_label(l, i)] = l end
  for i, l in ipairs(nq and nq.limits or {}) do nl[limit_label(l, i)] = l end
  for _, k in ipairs(sorted_keys(nl)) do
    if not same(ol[k], nl[k]) then
      push(d.changed, { limit = k, before = ol[k], after = nl[k] })
      push(out, "quota " .. k .. (ol[k] and " changed" or " added"))
    end
  end
  for _, k in ipairs(sorted_keys(ol)) do
    if nl[k] == nil then
      push(d.changed, { limit = k, before = ol[k] })
      push(out, "quota " .. k .. " removed")
    end
  end
  if not same(oq and oq.prices, nq and nq.prices) then
    push(d.changed, { limit = "prices" })
    push(out, "quota prices changed")
  end
  why.quotas = true
  return d
end

-- "2026-12-31" or "2026-12-31T23:59:59Z" → seconds since the epoch (UTC).
local function epoch(s)
  local y, mo, d, h, mi, se = tostring(s):match("^(%d+)-(%d+)-(%d+)T?(%d*):?(%d*):?(%d*)")
  if not y then return nil end
  local t = os.time({ year = y, month = mo, day = d, hour = tonumber(h) or 0,
                      min = tonumber(mi) or 0, sec = tonumber(se) or 0, isdst = false })
  local utc = os.time(os.date("!*t", t))
  return t + (t - utc)
end

local EXPIRING = 7 * 86400

local function diff_exceptions(o, n, out, why)
  local d = { added = list(), removed = list(), changed = list(), expiring = list() }
  local ob, nb = {}, {}
  for _, e in ipairs(o.exceptions) do ob[tostring(e.id)] = e end
  for _, e in ipairs(n.exceptions) do nb[tostring(e.id)] = e end
  local now = os.time()
  for _, id in ipairs(sorted_keys(nb)) do
    local e = nb[id]
    local facts = { id = id, owner = e.owner, expires = e.expires }
    if ob[id] == nil then
      push(d.added, facts)
      push(out, ("exception %s added (owner %s, expires %s)"):format(id,
        tostring(e.owner), tostring(e.expires)))
    elseif not same(ob[id], e) then
      push(d.changed, facts)
      push(out, "exception " .. id .. " changed")
    end
    local t = epoch(e.expires)
    if t and t > now and t - now <= EXPIRING then push(d.expiring, facts) end
  end
  for _, id in ipairs(sorted_keys(ob)) do
    if nb[id] == nil then
      push(d.removed, id)
      push(out, "exception " .. id .. " removed")
    end
  end
  if #d.added + #d.removed + #d.changed > 0 then why.exceptions = true end
  return d
end

local function diff_plugins(o, n, out, why)
  local ob, oorder = chain_by_name(o)
  local nb, norder = chain_by_name(n)
  local d = { added = list(), removed = list(), config_changed = list(),
              code_changed = list(), reordered = false }
  for _, name in ipairs(norder) do
    if not ob[name] then
      push(d.added, name)
      push(out, "plugin " .. name .. " added to the chain")
    else
      if not same(ob[name].config, nb[name].config) or ob[name].fail_open ~= nb[name].fail_open then
        push(d.config_changed, name)
        push(out, "plugin " .. name .. " configuration changed")
      end
      local oh, nh = o.plugins[name], n.plugins[name]
      if oh and nh and oh.sha256 ~= nh.sha256 then
        push(d.code_changed, name)
        push(out, "plugin " .. name .. " code changed")
      end
    end
  end
  for _, name in ipairs(oorder) do
    if not nb[name] then
      push(d.removed, name)
      push(out, "plugin " .. name .. " removed from the chain")
      why.plugins_removed = true
    end
  end
  local common_o, common_n = {}, {}
  for _, x in ipairs(oorder) do if nb[x] then push(common_o, x) end end
  for _, x in ipairs(norder) do if ob[x] then push(common_n, x) end end
  if not same(common_o, common_n) then
    d.reordered = true
    push(out, "plugin chain reordered")
  end
  if #d.added + #d.removed + #d.config_changed + #d.code_changed > 0 or d.reordered then
    why.plugins = true
  end
  return d
end

-- ---- entry points --------------------------------------------------------------

-- The governance diff from `old` (the live version; may be empty) to `new`.
function M.compare(old, new)
  local o, n = view(old), view(new)
  local summary, why = list(), {}
  local d = {
    base = old and old.version, version = new and new.version,
    backends = diff_backends(o, n, summary, why),
    models = diff_models(o, n, summary, why),
    consumers = diff_consumers(o, n, summary, why),
    quotas = diff_quotas(o, n, summary, why),
    exceptions = diff_exceptions(o, n, summary, why),
    plugins = diff_plugins(o, n, summary, why),
  }
  d.summary = summary
  d.changed = #summary > 0
  local reasons = list()
  for _, kind in ipairs(sorted_keys(why)) do
    if ALWAYS[kind] or o.require[kind] then push(reasons, kind) end
  end
  d.approval_reasons = reasons
  d.needs_approval = #reasons > 0
  return d
end

-- compare() as JSON text, and whether it needs a second person.
function M.report(old, new)
  local d = M.compare(old, new)
  return json.encode(d), d.needs_approval
end

return M
