-- ctx.lua — the request handle plugins receive.
--
-- Each plugin gets its own ctx proxy for a request, bound to that plugin
-- when the runtime creates it: ctx.vars is that plugin's alone, and what it
-- denies or annotates carries its name, whoever happens to run the code.
-- A proxy holds its data under two private keys (unique tables no plugin
-- can name; the sandbox's next/pairs skip them), and its methods live in a
-- locked metatable, so a plugin can neither overwrite a method another
-- plugin will call nor see another plugin's state. No side tables: nothing
-- outlives the request for the garbage collector to chase. Headers and the
-- JSON body are fetched from C only when a plugin asks, once.
local M = {}

local exceptions = require "sluice.exceptions"

local core, json
local type, pairs, ipairs, next, error, tostring, setmetatable, getmetatable =
  type, pairs, ipairs, next, error, tostring, setmetatable, getmetatable
local lower, find, match = string.lower, string.find, string.match

-- The private keys: a proxy's request state, and the chain entry (plugin)
-- it is bound to.
local PRIV, ENTRY = {}, {}
M.PRIVATE_KEYS = { [PRIV] = true, [ENTRY] = true }

-- The plugin whose phase runs now: only for naming who changed the body
-- in an error message, never for deciding whose state a call touches.
local running

function M.running(name) running = name end

function M.init(c, json_module)
  core = c
  json = json_module
end

-- Plain data only: strings, numbers, booleans and tables of them, without
-- metatables, copied so later edits by the giver change nothing.
local function plain_copy(v, depth)
  local tv = type(v)
  if tv == "string" or tv == "number" or tv == "boolean" or v == nil then return v end
  local mt = tv == "table" and getmetatable(v)
  -- decoded JSON carries sluice.json's (locked) array/object markers
  if tv ~= "table" or (mt and mt ~= "array_mt" and mt ~= "object_mt") or depth > 16 then
    error("only plain data (strings, numbers, booleans, tables) may be stored here", 3)
  end
  local c = {}
  for k, x in next, v do
    local tk = type(k)
    if tk ~= "string" and tk ~= "number" then error("table keys must be strings or numbers", 3) end
    c[k] = plain_copy(x, depth + 1)
  end
  return c
end

-- A plain-data copy of `v` (for the runtime).
function M.copy(v) return plain_copy(v, 0) end

-- ---- headers ---------------------------------------------------------------

-- Names already checked: plugins pass the same few header names on every
-- request, and the pattern costs more than the lookup. Bounded: emptied
-- when full, so names a client chose cannot grow it.
local good_names, ngood = {}, 0

local function valid_name(name)
  if good_names[name] then return true end
  local ok = type(name) == "string" and #name > 0 and #name <= 256 and
    not find(name, "[^!#$%%&'*+%-.^_`|~%w]")
  if ok then
    if ngood >= 256 then good_names, ngood = {}, 0 end
    good_names[name], ngood = true, ngood + 1
  end
  return ok
end

local function valid_value(value)
  return type(value) == "string" and #value <= 16384 and not find(value, "[%z\r\n]")
end

M.valid_name, M.valid_value = valid_name, valid_value

-- ---- request ---------------------------------------------------------------

local request_methods = {}

local function load_headers(rs)
  if rs.hmap then return end
  local flat = rs.source.headers(rs.handle) -- { name1, value1, … }, lowercase names
  local map, order = {}, {}
  for i = 1, #flat, 2 do
    local n, v = flat[i], flat[i + 1]
    if map[n] then
      map[n] = map[n] .. ", " .. v -- RFC 9110 §5.3: same as one header
    else
      map[n] = v
      order[#order + 1] = n
    end
  end
  rs.hmap, rs.horder = map, order
end

function request_methods.header(self, name)
  local rs = self[PRIV]
  if type(name) ~= "string" then error("header wants a name", 2) end
  load_headers(rs)
  return rs.hmap[lower(name)]
end

function request_methods.headers(self)
  local rs = self[PRIV]
  load_headers(rs)
  local copy = {}
  for k, v in pairs(rs.hmap) do copy[k] = v end
  return copy
end

function request_methods.set_header(self, name, value)
  if not valid_name(name) then error("invalid header name", 2) end
  if type(value) == "number" then value = tostring(value) end
  if not valid_value(value) then error("invalid value for header " .. name, 2) end
  local rs = self[PRIV]
  load_headers(rs)
  name = lower(name)
  if rs.hmap[name] == nil then rs.horder[#rs.horder + 1] = name end
  rs.hmap[name] = value
  rs.headers_dirty = true
end

-- Client credentials the gateway never forwards (core/proxy_head.c):
-- removing one changes nothing upstream, so the headers need not be
-- rewritten — the common case of an auth plugin taking its key out.
local NEVER_FORWARDED = { authorization = true, ["proxy-authorization"] = true,
                          ["api-key"] = true, ["x-api-key"] = true, ["x-goog-api-key"] = true }

function request_methods.remove_header(self, name)
  if not valid_name(name) then error("invalid header name", 2) end
  local rs = self[PRIV]
  load_headers(rs)
  name = lower(name)
  if rs.hmap[name] ~= nil then
    rs.hmap[name] = nil
    if not NEVER_FORWARDED[name] then rs.headers_dirty = true end
  end
end

function request_methods.body(self)
  local rs = self[PRIV]
  if rs.body == nil then rs.body = rs.source.body(rs.handle) end
  return rs.body
end

function request_methods.set_body(self, s)
  if type(s) ~= "string" then error("set_body wants a string", 2) end
  local rs = self[PRIV]
  rs.body, rs.body_dirty, rs.json, rs.json_err, rs.json_dirty = s, true, nil, nil, false
end

-- The body decoded as JSON, once; nil and an error when it is not JSON.
function request_methods.json(self)
  local rs = self[PRIV]
  if rs.json == nil and rs.json_err == nil then
    local v, err = json.decode(request_methods.body(self))
    if v == nil then rs.json_err = err else rs.json = v end
  end
  return rs.json, rs.json_err
end

-- Mark the body as changed to table v; it is encoded once, after access.
-- (The table keeps the JSON markers json() gave it; plugins cannot set
-- other metatables on data they hand back — encode ignores them anyway.)
function request_methods.set_json(self, v)
  if type(v) ~= "table" then error("set_json wants a table", 2) end
  local rs = self[PRIV]
  rs.json, rs.json_err, rs.json_dirty, rs.json_by = v, nil, true, running
end

local request_fields = {
  method = function(rs) return rs.method end,
  path = function(rs) return rs.path end,
  query = function(rs) return rs.query end,
}

local request_mt = {
  __index = function(t, k)
    local m = request_methods[k]
    if m then return m end
    local f = request_fields[k]
    if f then return f(t[PRIV]) end
    return nil
  end,
  __newindex = function(_, k) error("ctx.request." .. tostring(k) .. " is read-only; use its methods", 2) end,
  __metatable = false,
}

-- ---- ctx ---------------------------------------------------------------------

local ctx_methods = {}

-- Deny the request. Header names and values are checked here, in the
-- plugin's own call, so nothing it passes runs later outside its budget.
function ctx_methods.deny(self, status, code, message, headers)
  if type(status) ~= "number" or status < 400 or status > 599 or status % 1 ~= 0 then
    error("ctx:deny wants an HTTP status from 400 to 599", 2)
  end
  local st, e = self[PRIV], self[ENTRY]
  local flat
  if headers ~= nil then
    if type(headers) ~= "table" or getmetatable(headers) ~= nil then
      error("ctx:deny headers must be a plain table of name = value", 2)
    end
    flat = {}
    for k, v in next, headers do
      if type(v) == "number" then v = tostring(v) end
      if not valid_name(k) or not valid_value(v) then
        error("ctx:deny: invalid header", 2)
      end
      flat[#flat + 1] = lower(k)
      flat[#flat + 1] = v
    end
  end
  code = code == nil and "denied" or code
  message = message == nil and "request denied by policy" or message
  if type(code) ~= "string" or not match(code, "^[%w_.%-]+$") or #code > 64 then
    error("ctx:deny code must be a short identifier like model_not_found", 2)
  end
  if type(message) ~= "string" then error("ctx:deny message must be a string", 2) end
  st.deny = { status = status, code = code, message = message:sub(1, 500),
              headers = flat, plugin = e.name }
  M.decide(st, e.name, "deny", st.deny.message, code)
  return true
end

-- A plugin's decision on this request, for the audit record.
function M.decide(st, plugin, outcome, reason, code)
  local list = st.decisions
  if not list then list = {}; st.decisions = list end
  list[#list + 1] = { plugin = plugin, outcome = outcome, reason = reason, code = code }
end

local OUTCOMES = { allow = true, deny = true, modify = true, flag = true, warn = true }

function ctx_methods.decision(self, outcome, reason)
  if not OUTCOMES[outcome] then
    error("ctx:decision outcome must be allow, deny, modify, flag or warn", 2)
  end
  if reason ~= nil and type(reason) ~= "string" then
    error("ctx:decision reason must be a string", 2)
  end
  M.decide(self[PRIV], self[ENTRY].name, outcome, reason and reason:sub(1, 500))
end

-- The id (and value) of a live policy exception that grants `name` under
-- `kind` ("models", "backends", "quota", "limits") to this request's
-- consumer; the audit record names each exception a request used.
function ctx_methods.grant(self, kind, name)
  if type(kind) ~= "string" or type(name) ~= "string" then
    error("ctx:grant wants a kind and a name", 2)
  end
  local st = self[PRIV]
  local chain = st.chain
  if not chain or not chain.exceptions or #chain.exceptions == 0 then return nil end
  local id, value = exceptions.find(chain.exceptions, st.consumer, kind, name, os.time())
  if not id then return nil end
  local used = st.exceptions_used
  if not used then used = {}; st.exceptions_used = used end
  local seen = false
  for _, u in ipairs(used) do seen = seen or u == id end
  if not seen then used[#used + 1] = id end
  if type(value) == "table" then value = plain_copy(value, 0) end
  return id, value
end

-- body_filter of a whole (non-streamed) answer: the status the client gets
-- instead of the backend's. No effect once the head is out (streams).
function ctx_methods.set_status(self, status)
  if type(status) ~= "number" or status < 200 or status > 599 or status % 1 ~= 0 then
    error("ctx:set_status wants an HTTP status from 200 to 599", 2)
  end
  self[PRIV].status_override = status
end

-- body_filter: the piece this filter returns is the answer's last. The
-- gateway stops reading the backend (the connection is closed, not
-- reused), ends the answer to the client cleanly and runs log.
function ctx_methods.end_stream(self)
  self[PRIV].end_stream = true
end

-- A header on the answer to the client, served or denied.
function ctx_methods.set_response_header(self, name, value)
  if not valid_name(name) then error("invalid header name", 2) end
  if type(value) == "number" then value = tostring(value) end
  if not valid_value(value) then error("invalid value for header " .. name, 2) end
  local st = self[PRIV]
  local list = st.resp_headers
  if not list then list = {}; st.resp_headers = list end
  name = lower(name)
  for i = 1, #list, 2 do
    if list[i] == name then list[i + 1] = value; return end
  end
  list[#list + 1] = name
  list[#list + 1] = value
end

function ctx_methods.annotate(self, key, value)
  local st = self[PRIV]
  local notes = st.notes
  if not notes then notes = {}; st.notes = notes end
  notes[#notes + 1] = { plugin = self[ENTRY].name, key = tostring(key),
                        value = plain_copy(value, 0) }
end

-- targets: backend names, or { backend = name, model = provider_model }.
function ctx_methods.set_targets(self, targets)
  if type(targets) ~= "table" then error("set_targets wants a list of backend names", 2) end
  local st = self[PRIV]
  local list = plain_copy(targets, 0)
  for i = 1, #list do
    local t = list[i]
    if type(t) == "string" then
      list[i] = { backend = t }
    elseif type(t) ~= "table" or type(t.backend) ~= "string" then
      error("set_targets: target " .. i .. " must be a backend name or { backend = name }", 2)
    elseif t.model ~= nil and type(t.model) ~= "string" then
      error("set_targets: target " .. i .. ".model must be a string", 2)
    end
  end
  st.targets, st.targets_by = M.confined(st, list), self[ENTRY].name
  if M.on_targets then M.on_targets(st, st.targets) end
end

-- From now on this request may go only to `backends` (names): every later
-- target list — set_targets, a route, a fallback's next targets — is cut
-- to them, whoever sets it. Confining twice keeps what both allow. The
-- data boundary holds even against a plugin that runs after it.
function ctx_methods.confine(self, backends, reason)
  if type(backends) ~= "table" then error("confine wants a list of backend names", 2) end
  local st = self[PRIV]
  local set = {}
  for _, b in ipairs(backends) do
    if type(b) ~= "string" then error("confine wants a list of backend names", 2) end
    set[b] = true
  end
  local cur = st.confined
  if cur then
    for b in next, cur do
      if not set[b] then cur[b] = nil end
    end
  else
    st.confined = set
  end
  st.confined_why = type(reason) == "string" and reason:sub(1, 300) or nil
  st.confined_by = self[ENTRY].name
  if st.targets then st.targets = M.confined(st, st.targets) end
end

-- `list` ({ { backend, … } }) without the backends the request may not use.
function M.confined(st, list)
  local set = st.confined
  if not set then return list end
  local out = {}
  for i = 1, #list do
    if set[list[i].backend] then out[#out + 1] = list[i] end
  end
  return out
end

local ctx_fields = {
  id = function(st) return st.id end,
  request = function(st) return st.request end,
  vars = function(st, e)
    local vars = st.vars
    if not vars then vars = {}; st.vars = vars end
    local v = vars[e.order]
    if not v then v = {}; vars[e.order] = v end
    return v
  end,
  consumer = function(st) return st.consumer end,
  route = function(st)
    -- a request outside the catalog goes to the default backend: say so
    if not st.route and M.default_route then st.route = M.default_route(st) end
    return st.route
  end,
  response = function(st) return st.response end,
  usage = function(st)
    local u = st.usage
    if not u then u = {}; st.usage = u end
    return u
  end,
  policy_version = function(st) return st.version end,
  model = function(st) return st.model end,
}

local ctx_mt = {
  __index = function(t, k)
    local m = ctx_methods[k]
    if m then return m end
    local f = ctx_fields[k]
    if f then return f(t[PRIV], t[ENTRY]) end
    return nil
  end,
  __newindex = function(t, k, v)
    if k == "consumer" then
      t[PRIV].consumer = plain_copy(v, 0)
      return
    end
    error("ctx." .. tostring(k) .. " is read-only", 2)
  end,
  __metatable = false,
}

-- A new request. source: { headers = fn(handle), body = fn(handle) }
-- supplies request data on demand (C in the gateway, tables in specs).
-- Returns the shared request state; plugins get proxies from M.proxy().
function M.new(source, handle, id, method, path, query, version)
  -- One table holds the request's state and the ctx's (their fields do
  -- not overlap); the request proxy points at it like every ctx proxy.
  local st = { id = id, version = version, source = source, handle = handle,
               method = method, path = path, query = query or "" }
  st.request = setmetatable({ [PRIV] = st }, request_mt)
  return st
end

-- A ctx proxy for plugin entry e on request state st.
function M.proxy(st, e)
  return setmetatable({ [PRIV] = st, [ENTRY] = e }, ctx_mt)
end

function M.request_state(st) return st end

-- The request's headers as the runtime will send them (map and order),
-- loaded from the source if no plugin asked for them yet.
function M.headers_of(st)
  load_headers(st)
  return st.hmap, st.horder
end

return M
