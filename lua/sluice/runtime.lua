-- runtime.lua — the Lua half of the gateway: it compiles a policy version
-- into a plugin chain and runs the chain's phases for each request.
--
-- C calls in here only for phases some loaded plugin defines (chain.mask
-- tells it which). Every plugin call goes through core.call_plugin, which
-- runs it under the time and memory budget; an error or an overrun fails the
-- request with the plugin's name, or is logged and skipped when the policy
-- marks that plugin fail_open.
local M = {}

local sandbox = require "sluice.sandbox"
local schema = require "sluice.schema"
local ctxmod = require "sluice.ctx"
local frontdoor = require "sluice.frontdoor"
local exceptions = require "sluice.exceptions"

local core, services
local type, pairs, ipairs, tostring, tonumber, error = type, pairs, ipairs, tostring, tonumber, error
local getmetatable, rawget, next = getmetatable, rawget, next
local sort, concat = table.sort, table.concat

M.PHASES = { "access", "route", "upstream_response", "body_filter", "log" }
local PHASE_BIT = { access = 1, route = 2, upstream_response = 4, body_filter = 8, log = 16 }
local FRONTDOOR_BIT = 32 -- a model catalog is loaded: AI requests are translated
M.PHASE_BIT = PHASE_BIT

function M.init(c, svc)
  core, services = c, svc
  for name, mod in pairs(svc) do sandbox.service(name, mod) end
  -- sluice.metrics: what plugins report to /metrics themselves
  sandbox.service("metrics", {
    -- a backend's circuit breaker: "open" (for `seconds`), "closed"
    breaker = function(backend, state, seconds)
      if type(backend) ~= "string" or (state ~= "open" and state ~= "closed") then
        error("sluice.metrics.breaker wants a backend name and \"open\" or \"closed\"", 2)
      end
      if c.metric then c.metric("breaker", backend, state, tonumber(seconds) or 0) end
    end,
  })
  sandbox.init(c)
  ctxmod.init(c, svc.json)
  frontdoor.init(svc.json)
end

-- ---- compiling a policy -----------------------------------------------------

local function line_of(lines, tbl, key)
  local l = lines and lines[tbl]
  return l and (l[key] or l[true]) or 0
end

-- The line of a dotted path below `tbl` ("config.models.gpt.targets[2]").
local function line_of_path(lines, tbl, path)
  local best = line_of(lines, tbl, true)
  local cur = tbl
  for part in path:gmatch("[^%.%[%]]+") do
    if type(cur) ~= "table" then break end
    local key = tonumber(part) or part
    local l = line_of(lines, cur, key)
    if l > 0 then best = l end
    cur = cur[key]
  end
  return best
end

local ITEM_FIELDS = { name = true, config = true, fail_open = true, enabled = true }

local function compile_item(doc, f, list, i, item)
  local function fail(path, msg, at)
    local l = at or line_of(f.lines, list, i)
    return nil, ("%s:%d: plugins[%d]%s: %s"):format(f.path, l, i, path, msg)
  end
  if type(item) ~= "table" then return fail("", "expected a map with name and config") end
  for k in pairs(item) do
    if not ITEM_FIELDS[k] then return fail("." .. tostring(k), "unknown key", line_of(f.lines, item, k)) end
  end
  if item.fail_open ~= nil and type(item.fail_open) ~= "boolean" then
    return fail(".fail_open", "expected true or false", line_of(f.lines, item, "fail_open"))
  end
  if item.enabled ~= nil and type(item.enabled) ~= "boolean" then
    return fail(".enabled", "expected true or false", line_of(f.lines, item, "enabled"))
  end
  local name = item.name
  local src = doc.plugins[name]
  if not src then return fail(".name", "no plugin named '" .. tostring(name) .. "'") end
  local loaded, err, env = sandbox.load(name, src.path, src.code, doc.time_budget)
  if not loaded then return fail(".name", err) end
  -- Read the plugin's fields once, raw: a metatable on it would run plugin
  -- code outside any budget whenever the runtime looks a phase up.
  if getmetatable(loaded) ~= nil then
    return fail(".name", src.path .. ": a plugin table must not have a metatable")
  end
  local plugin = {}
  for _, k in ipairs({ "name", "priority", "schema", "init", "phases", "access", "route",
                       "upstream_response", "body_filter", "log" }) do
    plugin[k] = rawget(loaded, k)
  end
  if plugin.name ~= nil and plugin.name ~= name then
    return fail(".name", ("%s declares name '%s'"):format(src.path, tostring(plugin.name)))
  end
  local prio = plugin.priority or 0
  if type(prio) ~= "number" then return fail(".name", src.path .. ": priority must be a number") end
  local fields = plugin.schema or {}
  local ok, serr = schema.check_schema(fields, src.path .. ": schema")
  if not ok then return fail(".name", serr) end
  for _, phase in ipairs(M.PHASES) do
    if plugin[phase] ~= nil and type(plugin[phase]) ~= "function" then
      return fail(".name", src.path .. ": " .. phase .. " must be a function")
    end
  end
  local raw = item.config or {}
  if type(raw) ~= "table" then
    return fail(".config", "expected a map", line_of(f.lines, item, "config"))
  end
  -- A schema may carry plugin-written check functions: run under budget.
  local errs = {}
  local cok, conf = sandbox.call(function()
    return schema.check_fields(raw, fields, "", errs, services.re)
  end, doc.time_budget)
  if not cok then return fail(".config", "schema check failed: " .. tostring(conf)) end
  if #errs > 0 then
    local e = errs[1]
    return fail(".config." .. e[1], e[2], line_of_path(f.lines, raw, e[1]))
  end
  if plugin.init then
    local iok, ierr = sandbox.call(plugin.init, doc.time_budget, conf)
    if not iok then return fail(".name", "init failed: " .. tostring(ierr)) end
  end
  local entry = {
    name = name, conf = conf, priority = prio,
    fail_open = item.fail_open == true, enabled = item.enabled ~= false,
    env = env,
  }
  for _, phase in ipairs(M.PHASES) do entry[phase] = plugin[phase] end
  -- phases(conf): the phases this configuration needs; the others are not
  -- run at all (a stream is not framed for a filter that would pass it on).
  if plugin.phases ~= nil then
    if type(plugin.phases) ~= "function" then return fail(".name", src.path .. ": phases must be a function") end
    local pok, used = sandbox.call(plugin.phases, doc.time_budget, conf)
    if not pok or type(used) ~= "table" then
      return fail(".name", "phases failed: " .. tostring(pok and "it must return a table of phase names" or used))
    end
    for _, phase in ipairs(M.PHASES) do
      if not used[phase] then entry[phase] = nil end
    end
  end
  return entry
end

-- What plugins judge backends by, beyond what C needs to reach them:
-- data_classes (the data classes a backend may receive).
local function backend_facts(files, backends)
  for _, f in ipairs(files) do
    local bes = f.root.backends
    if type(bes) == "table" then
      for name, b in pairs(bes) do
        local dc = type(b) == "table" and b.data_classes
        if dc ~= nil and dc ~= false and backends[name] then
          local l = line_of(f.lines, b, "data_classes")
          if type(dc) ~= "table" or #dc == 0 then
            return nil, ("%s:%d: backends.%s.data_classes: expected a list of data classes"):format(f.path, l, name)
          end
          local list = {}
          for i, c in ipairs(dc) do
            if type(c) ~= "string" or c == "" then
              return nil, ("%s:%d: backends.%s.data_classes[%d]: expected a data class name"):format(f.path, l, name, i)
            end
            list[i] = c
          end
          backends[name].data_classes = list
        end
      end
    end
  end
  return true
end

-- C checks the same list (core/policy.c); `governance` is the admin API's.
local SECTIONS = { backends = true, default_backend = true, plugins = true, models = true,
                   exceptions = true, exceptions_max_lifetime = true, governance = true }

local function check_sections(files)
  for _, f in ipairs(files) do
    if type(f.root) == "table" then
      for k in pairs(f.root) do
        if not SECTIONS[k] then
          return nil, ("%s:%d: %s: unknown policy section (known: backends, default_backend, "
            .. "models, plugins, exceptions, exceptions_max_lifetime, governance)"):format(
            f.path, line_of(f.lines, f.root, k), tostring(k))
        end
      end
    end
  end
  return true
end

-- doc = { version, time_budget, files = { { path, root, lines } },
--         plugins = { name = { path, code } }, backends = { name = true } }
-- Returns the chain, or nil and "file:line: key: reason".
function M.compile(doc)
  local entries, order = {}, 0
  for _, f in ipairs(doc.files) do
    local list = f.root.plugins
    if list ~= nil then
      if type(list) ~= "table" then
        return nil, ("%s:%d: plugins: expected a list"):format(f.path, line_of(f.lines, f.root, "plugins"))
      end
      for i, item in ipairs(list) do
        local e, err = compile_item(doc, f, list, i, item)
        if not e then return nil, err end
        if e.enabled then
          order = order + 1
          e.order = order
          entries[#entries + 1] = e
        end
      end
    end
  end
  -- Higher priority first; equal priorities keep policy order.
  sort(entries, function(a, b)
    if a.priority ~= b.priority then return a.priority > b.priority end
    return a.order < b.order
  end)
  local chain = { version = doc.version, entries = entries, mask = 0,
                  time_budget = doc.time_budget, backends = doc.backends or {},
                  default_backend = doc.default_backend }
  local sok, serr = check_sections(doc.files)
  if not sok then return nil, serr end
  local bok, berr = backend_facts(doc.files, chain.backends)
  if not bok then return nil, berr end
  local exc, eerr = exceptions.compile(doc.files, line_of)
  if not exc then return nil, eerr end
  chain.exceptions = exc
  local catalog, cerr = frontdoor.compile(doc.files, chain.backends, line_of)
  if catalog == nil then return nil, cerr end
  chain.catalog = catalog or nil
  for _, phase in ipairs(M.PHASES) do
    local list = {}
    for _, e in ipairs(entries) do
      if e[phase] then list[#list + 1] = e end
    end
    chain[phase] = list
    if #list > 0 then chain.mask = chain.mask + PHASE_BIT[phase] end
  end
  if chain.catalog then chain.mask = chain.mask + FRONTDOOR_BIT end
  return chain
end

-- ---- running phases -----------------------------------------------------------

-- A route phase's list, as set_targets would take it: { { backend, model? } }.
local function route_targets(res)
  if getmetatable(res) ~= nil then return nil end
  local list = {}
  for i = 1, #res do
    local t = rawget(res, i)
    if type(t) == "string" then
      list[i] = { backend = t }
    elseif type(t) == "table" and getmetatable(t) == nil and type(rawget(t, "backend")) == "string" then
      local m = rawget(t, "model")
      list[i] = { backend = rawget(t, "backend"), model = type(m) == "string" and m or nil }
    else
      return nil
    end
  end
  return list
end

-- Run one phase over its plugins. Returns nil, "next", or "error", plugin,
-- message.
local function run(chain, phase, st, a1, a2)
  local list = chain[phase]
  local budget = chain.time_budget
  for i = 1, #list do
    local e = list[i]
    ctxmod.running(e.name)
    local ok, res = sandbox.call(e[phase], budget, ctxmod.proxy(st, e), e.conf, a1, a2)
    ctxmod.running(nil)
    if not ok then
      core.log("error", ("plugin %s failed in %s: %s"):format(e.name, phase, res))
      if not e.fail_open then return "error", e.name, res end
      local notes = st.notes or {}
      st.notes = notes
      notes[#notes + 1] = { plugin = e.name, key = "plugin_error", value = "failed open: " .. res }
    elseif phase == "route" and type(res) == "table" then
      local list = route_targets(res)
      if not list then return "error", e.name, "route must return a list of backend names" end
      st.targets, st.targets_by = ctxmod.confined(st, list), e.name
      if ctxmod.on_targets then ctxmod.on_targets(st, st.targets) end
    elseif phase == "upstream_response" and res == "next" then
      return "next"
    elseif phase == "body_filter" and type(res) == "string" then
      a1 = res -- the next filter sees what this one produced
      st.filtered = res
    end
    if st.deny and (phase == "access" or phase == "route") then break end
  end
  return nil
end

local function flat_headers(rs)
  local out = {}
  for _, n in ipairs(rs.horder) do
    local v = rs.hmap[n]
    if v ~= nil then
      out[#out + 1] = n
      out[#out + 1] = v
    end
  end
  return out
end

local request_source -- set by the C bridge: { headers = fn, body = fn }

local function encode_or_raise(v)
  local s, err = services.json.encode(v)
  if not s then error(err, 0) end
  return s
end

function M.set_request_source(src) request_source = src end

-- access and route, one call from C. Returns:
--   "ok", ctx|nil, headers|nil, body|nil, targets|nil
--   "deny", ctx|nil, status, code, message, headers|nil, plugin
--   "error", ctx|nil, plugin, message
-- ctx comes back only when a later phase will need it (chain.keep_ctx).
-- The denial, with the headers plugins set for the answer.
local function deny_headers(st, flat)
  local extra = st.resp_headers
  if not extra then return flat end
  local out = {}
  for _, v in ipairs(extra) do out[#out + 1] = v end
  for _, v in ipairs(flat or {}) do out[#out + 1] = v end
  return out
end

-- A denial at the Anthropic door is answered in Anthropic's error shape
-- (its SDKs read `error.type`); the decision recorded is the same.
local anthropic_errors
local function denial(chain, method, path, keep, status, code, message, headers, plugin)
  if chain.catalog and method == "POST" and path == "/v1/messages" then
    anthropic_errors = anthropic_errors or require("sluice.front.anthropic").error
    local body = services.json.encode(anthropic_errors({ error = { message = message, code = code } }, status))
    return "respond", keep, status, body, headers
  end
  return "deny", keep, status, code, message, headers, plugin
end

function M.request(chain, handle, id, method, path, query, source)
  local st = ctxmod.new(source or request_source, handle, id, method, path, query, chain.version)
  st.chain = chain
  if chain.catalog then frontdoor.resolve(chain, st, method, path) end
  local kind, a, b = run(chain, "access", st)
  if not kind and not st.deny and #chain.route > 0 then
    kind, a, b = run(chain, "route", st)
  end
  -- The ctx lives on when a later phase needs it or the audit record has
  -- something of it to tell.
  local keep = (chain.mask >= 4 or st.decisions or st.notes) and st or nil
  if kind then return kind, keep, a, b end
  local d = st.deny
  if d then
    return denial(chain, method, path, keep, d.status, d.code, d.message, deny_headers(st, d.headers), d.plugin)
  end
  local targets = st.targets
  if targets then
    if type(targets) ~= "table" then
      return "error", keep, st.targets_by or "route", "route must return a list of backend names"
    end
    for i = 1, #targets do
      local name = targets[i].backend
      if not chain.backends[name] then
        return "error", keep, st.targets_by or "route", "route chose unknown backend '" .. name .. "'"
      end
    end
    if #targets == 0 then
      if st.confined then
        return denial(chain, method, path, keep, 403, "data_boundary", st.confined_why or
          "no backend this request may go to serves it", deny_headers(st), st.confined_by)
      end
      return denial(chain, method, path, keep, 503, "no_target",
        "no backend may serve this request under the current policy", deny_headers(st), st.targets_by)
    end
  end
  local model
  local fk, fa, fb, fc = frontdoor.request(chain, st, method, path)
  if fk == "respond" then
    return "respond", keep, fa, fb, deny_headers(st)
  elseif fk == "deny" then
    ctxmod.decide(st, "catalog", "deny", fc, fb)
    return denial(chain, method, path, keep, fa, fb, fc, deny_headers(st), "catalog")
  elseif fk == "ok" then
    targets, model = fa, fb
  elseif targets then
    local names = {}
    for i = 1, #targets do names[i] = targets[i].backend end
    targets = names
  end
  if keep then
    st.route = st.route or {}
    st.route.names = targets
  end
  local rs = st
  local headers = rs.headers_dirty and flat_headers(rs) or nil
  local body
  if rs.json_dirty then
    -- plugin data: encode it under the budget
    local ok, s = sandbox.call(encode_or_raise, chain.time_budget, rs.json)
    if not ok then
      return "error", keep, rs.json_by or "set_json", "set_json: cannot encode the body: " .. s
    end
    body = s
  elseif rs.body_dirty then
    body = rs.body
  end
  return "ok", keep, headers, body, targets, model, st.resp_headers
end

-- Write attempt n of an AI request toward backend `name` in that backend's
-- API: "ok", path, headers, body | "deny", status, code, message |
-- "error", who, message.
function M.prepare(chain, st, n, name)
  local ok, k, a, b, c = pcall(frontdoor.prepare, chain, st, n, name)
  if not ok then
    core.log("error", "adapter failed to prepare a request: " .. tostring(k))
    return "error", "adapter", tostring(k)
  end
  return k, a, b, c
end

-- Attempt `attempt` toward `backend` reached a point where nothing went to
-- the client yet: its head arrived (status, headers; body: the whole body
-- of an error answer when the gateway read it first), or it failed before
-- answering (status 0, err "connect_error", "timeout", "reset", "tls",
-- "dns", "protocol" or "error"). ms: the attempt's latency so far.
-- Returns "accept", "next" (try the next target), "next", names (a plugin
-- called ctx:set_targets: these are tried after this attempt, in place of
-- the rest of the list), or "error", plugin, message.
function M.upstream_response(chain, st, status, headers, backend, attempt, more, err, ms, body)
  local hmap = {}
  for i = 1, #headers, 2 do hmap[headers[i]] = headers[i + 1] end
  st.response = { status = status, headers = hmap, backend = backend, error = err }
  if st.route then st.route.backend = backend end
  attempt = attempt or 1
  local info = { number = attempt, backend = backend, status = status, error = err,
                 latency_ms = ms, body = body, headers = hmap, more = more and true or false }
  local before = st.targets
  local kind, a, b = run(chain, "upstream_response", st, info)
  local attempts = st.attempts
  if not attempts then attempts = {}; st.attempts = attempts end
  attempts[attempt] = { backend = backend, status = status, error = err,
                        latency_ms = ms, outcome = kind == "next" and "next" or "served" }
  if kind == "error" then return "error", a, b end
  if kind ~= "next" then return "accept" end
  local targets = st.targets
  if targets == before or type(targets) ~= "table" then return "next" end
  -- ctx:set_targets in this phase: the targets still to try (none left
  -- inside the request's confinement: this answer stands)
  if #targets == 0 then return "accept" end
  local names = {}
  local ai = st.ai
  for i = 1, #targets do
    local name = targets[i].backend
    if not chain.backends[name] then
      return "error", st.targets_by or "upstream_response", "set_targets chose unknown backend '" .. name .. "'"
    end
    names[i] = name
  end
  if ai then
    local by_backend = {}
    for _, t in ipairs(ai.entry.targets) do by_backend[t.backend] = by_backend[t.backend] or t.model end
    for i = #ai.targets, attempt + 1, -1 do ai.targets[i] = nil end
    for i, t in ipairs(targets) do
      ai.targets[attempt + i] = { backend = t.backend, model = t.model or by_backend[t.backend] or ai.public }
    end
  end
  return "next", names
end

-- A body piece (an SSE event, or the whole body): returns the bytes to send
-- (unchanged when no filter changed them), or "error", plugin, message.
function M.body_filter(chain, st, data, last)
  st.filtered = nil
  if st.ai and st.ai.attempt then
    local ok, out = pcall(frontdoor.translate, st, data, last)
    if not ok then
      core.log("error", "adapter failed to translate an answer: " .. tostring(out))
      return "error", "adapter", tostring(out)
    end
    data = out
    st.filtered = out
    local mod = st.ai.attempt.target.moderation
    if mod and st.response then st.response.moderation = mod end
    if #chain.body_filter == 0 then return out, st.status_override end
  end
  local kind, a, b = run(chain, "body_filter", st, data, last)
  if kind == "error" then return "error", a, b end
  -- a filter called ctx:end_stream(): this piece is the answer's last
  return st.filtered or data, st.status_override, st.end_stream and "end" or nil
end

-- What the policy adds to the request's audit record: a JSON object whose
-- members C appends to the line it writes (or, when one member would not
-- encode, the others as members each with a leading comma).
-- Annotations any plugin may make that the record also carries at its top
-- level, for reports: the request's data class, its cost in US dollars.
local PROMOTED = { data_class = true, cost_usd = true }

local function audit_fields(st, attempts_written)
  -- One table, encoded once (member order is not part of the record);
  -- should some member not encode, the others still go, one by one.
  local rec = {}
  local c = st.consumer
  if type(c) == "table" then
    rec.consumer = { id = c.id, app = c.app, team = c.team, source = c.source }
  end
  local m = st.model
  if m then
    local now = m.deprecated_at and os.time()
    rec.model = { requested = m.requested, public = m.name, stream = m.stream,
                  deprecated = (now and now >= m.deprecated_at) or nil,
                  sunset = (m.sunset_at and os.time() >= m.sunset_at) or nil }
  end
  local u = st.usage
  if type(u) == "table" and next(u) ~= nil then rec.usage = u end
  rec.decisions = st.decisions
  -- every attempt toward a backend: { backend, status, error, latency_ms,
  -- outcome } (the gateway writes them itself when it saw them)
  if not attempts_written and type(st.attempts) == "table" and #st.attempts > 0 then
    rec.attempts = st.attempts
  end
  rec.exceptions = st.exceptions_used
  if st.notes then
    local by, top = {}, nil
    for _, n in ipairs(st.notes) do
      local p = by[n.plugin]
      if not p then p = {}; by[n.plugin] = p end
      p[n.key] = n.value
      if PROMOTED[n.key] then top = top or {}; top[n.key] = n.value end
    end
    rec.annotations = by
    if top then
      for k, v in pairs(top) do rec[k] = v end
    end
  end
  if next(rec) == nil then return "" end
  local encode = services.json.encode
  local s = encode(rec)
  if s then return s end -- an object: C appends its members (no copy here)
  local out = {}
  for k, v in pairs(rec) do
    local one = encode(v)
    if one then out[#out + 1] = ',"' .. k .. '":' .. one end
  end
  return concat(out)
end

-- Live exceptions, for the admin API (a JSON list) and `sluice check`
-- (text lines, those expiring within 7 days marked).
function M.exceptions(chain, format)
  local list = exceptions.live(chain.exceptions, os.time(), 7 * 86400)
  if format ~= "text" then
    if #list == 0 then return "[]" end
    return services.json.encode(list)
  end
  if #(chain.exceptions or {}) == 0 then return "" end -- the policy has none
  local soon = 0
  for _, e in ipairs(list) do if e.expiring then soon = soon + 1 end end
  local out = { ("exceptions: %d live, %d expiring within 7 days\n"):format(#list, soon) }
  for _, e in ipairs(list) do
    local grants = {}
    for kind, names in pairs(e.grants) do grants[#grants + 1] = kind .. " " .. concat(names, ",") end
    sort(grants)
    out[#out + 1] = ("  %s%s  owner %s  expires %s (%.1f days)  grants %s\n"):format(
      e.expiring and "EXPIRING " or "", e.id, e.owner, e.expires, e.seconds_left / 86400,
      concat(grants, "; "))
  end
  return concat(out)
end

-- The request is over (finished, failed or aborted). record: a table of
-- facts for log plugins. Returns the audit fields.
function M.log(chain, st, record)
  if #chain.log > 0 then
    -- a copy: a log plugin cannot rewrite what another recorded
    record.notes = st.notes and ctxmod.copy(st.notes)
    run(chain, "log", st, record)
  end
  -- The request's policy facts for /metrics: one call, plain values, the
  -- request's own tables read in C (core/metrics_gateway.c).
  local c, m, u = st.consumer, st.model, st.usage
  if type(c) ~= "table" then c = nil end
  if type(u) ~= "table" then u = nil end
  core.metric("request", chain.version, chain.exceptions, c and c.team, m and m.name,
    record.backend, u and u.prompt_tokens, u and u.completion_tokens,
    st.decisions, st.notes, st.exceptions_used)
  if record.no_audit then return nil end -- no sink: nothing to build
  return audit_fields(st, record.attempts_written)
end

return M
