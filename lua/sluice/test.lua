-- test.lua — helpers for plugin specs run with `sluice spec`.
--
-- They drive the real runtime: the plugin is loaded in its sandbox, its
-- configuration is checked against its schema, init runs, and phases run
-- with the real ctx, exactly as in the gateway. Only the request comes from
-- a table instead of a socket.
--
--   local t = require "sluice.test"
--   local chain = t.chain({ { name = "catalog", config = { … } } })
--   local res = t.request(chain, { method = "POST", path = "/v1/chat/completions",
--                                  headers = { ["content-type"] = "application/json" },
--                                  json = { model = "gpt-4o" } })
--   assert.equals("deny", res.action); assert.equals(404, res.status)
local M = {}

local runtime = require "sluice.runtime"
local json = require "sluice.json"

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

M.plugin_dirs = { "plugins" }

-- Find plugins/NAME.lua in M.plugin_dirs (or an explicit `path`).
local function find_plugin(name, path)
  if path then return path, read(path) end
  for _, dir in ipairs(M.plugin_dirs) do
    local p = dir .. "/" .. name .. ".lua"
    local code = read(p)
    if code then return p, code end
  end
  error("no plugin '" .. name .. "' in " .. table.concat(M.plugin_dirs, ", "), 3)
end

-- Compile a chain from a list of { name, config, fail_open, path }.
-- Returns the chain, or raises the compiler's error ("file:line: key: …").
function M.chain(items, opts)
  opts = opts or {}
  local plugins, list = {}, {}
  for i, it in ipairs(items) do
    local path, code = find_plugin(it.name, it.path)
    plugins[it.name] = { path = path, code = code }
    list[i] = { name = it.name, config = it.config, fail_open = it.fail_open }
  end
  -- opts.models: a catalog as in the policy's `models:`; opts.backends:
  -- { name = { provider =, region =, data_classes = { … } } }.
  local backends = {}
  for name, b in pairs(opts.backends or {}) do
    backends[name] = type(b) == "table" and b or { provider = "openai" }
    backends[name].provider = backends[name].provider or "openai"
  end
  if opts.models and not next(backends) then backends.mock = { provider = "openai" } end
  local chain, err = runtime.compile({
    version = opts.version or "spec",
    time_budget = opts.time_budget or 100,
    files = { { path = "(spec)", lines = {},
                root = { plugins = list, models = opts.models, exceptions = opts.exceptions,
                         exceptions_max_lifetime = opts.exceptions_max_lifetime } } },
    plugins = plugins,
    backends = backends,
    default_backend = opts.default_backend or next(backends),
  })
  if not chain then error(err, 2) end
  return chain
end

-- The same, returning nil and the error instead of raising.
function M.try_chain(items, opts)
  local ok, res = pcall(M.chain, items, opts)
  if ok then return res end
  return nil, res
end

local source = {
  headers = function(h) return h.flat end,
  body = function(h) return h.body end,
}

local counter = 0

-- Run access and route for a request described by a table; returns
-- { action, ctx, status, code, message, headers, body, targets, plugin }.
function M.request(chain, req)
  local flat = {}
  for k, v in pairs(req.headers or {}) do
    flat[#flat + 1] = k:lower()
    flat[#flat + 1] = v
  end
  local body = req.body
  if req.json then body = assert(json.encode(req.json)) end
  counter = counter + 1
  local handle = { flat = flat, body = body or "" }
  local id = req.id or ("spec-%d"):format(counter)
  local r = { runtime.request(chain, handle, id, req.method or "POST",
                              req.path or "/v1/chat/completions", req.query or "", source) }
  local res = { action = r[1], ctx = r[2] }
  if res.action == "ok" then
    res.headers, res.body, res.targets, res.model = r[3], r[4], r[5], r[6]
    res.response_headers = {}
    local rh = r[7] or {}
    for i = 1, #rh, 2 do res.response_headers[rh[i]] = rh[i + 1] end
    if res.headers then
      local map = {}
      for i = 1, #res.headers, 2 do map[res.headers[i]] = res.headers[i + 1] end
      res.header_map = map
    end
  elseif res.action == "deny" then
    res.status, res.code, res.message, res.deny_headers, res.plugin = r[3], r[4], r[5], r[6], r[7]
    res.response_headers = {}
    local rh = r[6] or {}
    for i = 1, #rh, 2 do res.response_headers[rh[i]] = rh[i + 1] end
  elseif res.action == "respond" then
    res.status, res.body = r[3], r[4]
  else
    res.plugin, res.message = r[3], r[4]
  end
  return res
end

-- Later phases, given the ctx a request returned.
function M.upstream_response(chain, ctx, status, headers, backend, attempt, more)
  local flat = {}
  for k, v in pairs(headers or {}) do flat[#flat + 1] = k:lower(); flat[#flat + 1] = v end
  return runtime.upstream_response(chain, ctx, status, flat, backend or "spec",
                                   attempt or 1, more)
end

function M.body_filter(chain, ctx, data, last)
  return runtime.body_filter(chain, ctx, data, last)
end

-- Returns the record (with what log plugins added) and the audit fields
-- the policy adds, decoded: { decisions =, annotations =, consumer =, … }.
function M.log(chain, ctx, record)
  record = record or {}
  local extra = runtime.log(chain, ctx, record) or ""
  -- a JSON object, or members each with a leading comma
  if extra:sub(1, 1) ~= "{" then extra = "{" .. extra:sub(2) .. "}" end
  local audit = json.decode(extra) or {}
  return record, audit
end

-- The decisions taken on a request so far: { { plugin, outcome, reason, code } }.
function M.decisions(ctx)
  return ctx and ctx.decisions or {}
end

return M
