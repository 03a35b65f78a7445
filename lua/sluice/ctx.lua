-- ctx.lua — the request handle plugins receive.
--
-- ctx and ctx.request are empty proxies: their data lives in module-local
-- tables plugins cannot reach, so a plugin can neither overwrite a method
-- another plugin will call nor read another plugin's ctx.vars. Headers and
-- the JSON body are fetched from C only when a plugin asks, once.
local M = {}

local core, json
local type, pairs, error, tostring, setmetatable = type, pairs, error, tostring, setmetatable
local lower = string.lower

local ST = setmetatable({}, { __mode = "k" }) -- proxy → private state

function M.init(c, json_module)
  core = c
  json = json_module
end

-- ---- request ---------------------------------------------------------

local request_methods = {}

local function load_headers(st)
  if st.hmap then return end
  local flat = st.source.headers(st.handle) -- { name1, value1, … }, lowercase names
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
  st.hmap, st.horder = map, order
end

function request_methods.header(self, name)
  local st = ST[self]
  load_headers(st)
  return st.hmap[lower(name)]
end

function request_methods.headers(self)
  local st = ST[self]
  load_headers(st)
  local copy = {}
  for k, v in pairs(st.hmap) do copy[k] = v end
  return copy
end

local function check_header(name, value)
  if type(name) ~= "string" or not name:match("^[!#$%%&'*+%-.^_`|~%w]+$") then
    error("invalid header name " .. tostring(name), 3)
  end
  if value ~= nil and (type(value) ~= "string" or value:find("[%z\r\n]")) then
    error("invalid value for header " .. name, 3)
  end
end

function request_methods.set_header(self, name, value)
  check_header(name, value)
  local st = ST[self]
  load_headers(st)
  name = lower(name)
  if st.hmap[name] == nil then st.horder[#st.horder + 1] = name end
  st.hmap[name] = tostring(value)
  st.headers_dirty = true
end

function request_methods.remove_header(self, name)
  check_header(name)
  local st = ST[self]
  load_headers(st)
  name = lower(name)
  if st.hmap[name] ~= nil then
    st.hmap[name] = nil
    st.headers_dirty = true
  end
end

function request_methods.body(self)
  local st = ST[self]
  if st.body == nil then st.body = st.source.body(st.handle) end
  return st.body
end

function request_methods.set_body(self, s)
  if type(s) ~= "string" then error("set_body wants a string", 2) end
  local st = ST[self]
  st.body, st.body_dirty, st.json, st.json_dirty = s, true, nil, false
end

-- The body decoded as JSON, once; nil and an error when it is not JSON.
function request_methods.json(self)
  local st = ST[self]
  if st.json == nil and st.json_err == nil then
    local v, err = json.decode(request_methods.body(self))
    if v == nil then st.json_err = err else st.json = v end
  end
  return st.json, st.json_err
end

function request_methods.set_json(self, v)
  if type(v) ~= "table" then error("set_json wants a table", 2) end
  local st = ST[self]
  st.json, st.json_err, st.json_dirty = v, nil, true
end

local request_fields = {
  method = function(st) return st.method end,
  path = function(st) return st.path end,
  query = function(st) return st.query end,
}

local request_mt = {
  __index = function(t, k)
    local m = request_methods[k]
    if m then return m end
    local f = request_fields[k]
    if f then return f(ST[t]) end
    return nil
  end,
  __newindex = function(_, k) error("ctx.request." .. tostring(k) .. " is read-only; use its methods", 2) end,
  __metatable = false,
}

-- ---- ctx ----------------------------------------------------------------

local ctx_methods = {}

function ctx_methods.deny(self, status, code, message, headers)
  if type(status) ~= "number" or status < 400 or status > 599 then
    error("ctx:deny wants an HTTP status from 400 to 599", 2)
  end
  local st = ST[self]
  st.deny = { status = status, code = tostring(code or "denied"),
              message = tostring(message or "request denied by policy"),
              headers = headers, plugin = st.current }
  return true
end

function ctx_methods.annotate(self, key, value)
  local st = ST[self]
  local notes = st.notes
  if not notes then notes = {}; st.notes = notes end
  notes[#notes + 1] = { plugin = st.current, key = tostring(key), value = value }
end

function ctx_methods.set_targets(self, targets)
  if type(targets) ~= "table" then error("set_targets wants a list of backend names", 2) end
  ST[self].targets = targets
end

local ctx_fields = {
  id = function(st) return st.id end,
  request = function(st) return st.request end,
  vars = function(st)
    local v = st.vars[st.current_index]
    if not v then v = {}; st.vars[st.current_index] = v end
    return v
  end,
  consumer = function(st) return st.consumer end,
  route = function(st) return st.route end,
  response = function(st) return st.response end,
  usage = function(st) return st.usage end,
  policy_version = function(st) return st.version end,
}

local ctx_writable = { consumer = true }

local ctx_mt = {
  __index = function(t, k)
    local m = ctx_methods[k]
    if m then return m end
    local f = ctx_fields[k]
    if f then return f(ST[t]) end
    return nil
  end,
  __newindex = function(t, k, v)
    if ctx_writable[k] then ST[t][k] = v; return end
    error("ctx." .. tostring(k) .. " is read-only", 2)
  end,
  __metatable = false,
}

-- A new ctx. source: { headers = fn(handle), body = fn(handle) } supplies
-- request data on demand (C in the gateway, plain tables in specs).
function M.new(source, handle, id, method, path, query, version)
  local req = setmetatable({}, request_mt)
  ST[req] = { source = source, handle = handle, method = method, path = path,
              query = query or "" }
  local ctx = setmetatable({}, ctx_mt)
  ST[ctx] = { id = id, request = req, vars = {}, current_index = 0,
              version = version, usage = {} }
  return ctx
end

function M.state(ctx) return ST[ctx] end
function M.request_state(ctx) return ST[ST[ctx].request] end

return M
