-- frontdoor.lua — the AI front doors: which paths speak which API, the
-- model catalog that turns a public model name into targets, and the
-- provider adapters around each attempt (lua/sluice/providers/).
--
-- A request through a front door is normalised to the OpenAI Chat
-- Completions shape once (the Anthropic door translates on the way in),
-- each attempt is written in its backend's own API by that provider's
-- adapter, and the answer is translated back, streamed event by event,
-- with its token usage read on the way. Clients never see which provider
-- served them.
local M = {}

local ctxmod = require "sluice.ctx"
local schema = require "sluice.schema"
local exceptions = require "sluice.exceptions"
local json
local type, pairs, ipairs, tostring, error, require, pcall =
  type, pairs, ipairs, tostring, error, require, pcall
local concat, lower = table.concat, string.lower

local DOORS = {
  ["POST /v1/chat/completions"] = { front = "openai", op = "chat" },
  ["POST /v1/embeddings"] = { front = "openai", op = "embeddings" },
  ["POST /v1/messages"] = { front = "anthropic", op = "chat" },
  ["GET /v1/models"] = { front = "openai", op = "models" },
}

-- Headers the adapters own, or that make no sense once a body is rewritten.
local DROP = { ["content-length"] = true, ["accept-encoding"] = true,
               ["anthropic-version"] = true, ["openai-organization"] = true,
               ["openai-project"] = true }

function M.init(json_module)
  json = json_module
end

local adapters = {}

local function adapter(provider)
  local a = adapters[provider]
  if not a then
    a = require("sluice.providers." .. provider)
    adapters[provider] = a
  end
  return a
end

local front_anthropic
local function anthropic_front()
  front_anthropic = front_anthropic or require("sluice.front.anthropic")
  return front_anthropic
end

-- ---- the catalog (policy section `models:`) ------------------------------

-- models:
--   NAME:
--     targets: [ { backend: B, model: PROVIDER_MODEL }, … ]   (in order)
--     aliases: [ other-name, … ]
--     deprecated: 2026-01-31      (optional: warn from then on)
--     sunset: 2026-06-30          (optional: refused from then on)
--     replacement: OTHER-NAME     (optional: named in warnings and refusals)
-- Returns the catalog, or nil and "file:line: models.NAME…: reason".
local ENTRY_KEYS = { targets = true, aliases = true, deprecated = true, sunset = true,
                     replacement = true }

function M.compile(files, backends, line_of)
  local cat = { names = {}, list = {} }
  local replacements = {}
  local any = false
  for _, f in ipairs(files) do
    local models = f.root.models
    if models ~= nil then
      local function fail(tbl, key, path, msg)
        return nil, ("%s:%d: models%s: %s"):format(f.path, line_of(f.lines, tbl, key), path, msg)
      end
      if type(models) ~= "table" then return fail(f.root, "models", "", "expected a map of model names") end
      for name, m in pairs(models) do
        local path = "." .. tostring(name)
        if type(m) ~= "table" then return fail(models, name, path, "expected a map with targets") end
        for k in pairs(m) do
          if not ENTRY_KEYS[k] then
            return fail(m, k, path .. "." .. tostring(k), "unknown key")
          end
        end
        local targets = m.targets
        if type(targets) ~= "table" or #targets == 0 then
          return fail(m, "targets", path .. ".targets", "needs at least one target")
        end
        local entry = { name = name, targets = {} }
        for _, k in ipairs({ "deprecated", "sunset" }) do
          if m[k] ~= nil then
            local at = schema.parse_date(m[k])
            if not at then
              return fail(m, k, path .. "." .. k, "expected a date like 2026-06-30 or 2026-06-30T14:00:00Z")
            end
            entry[k], entry[k .. "_at"] = tostring(m[k]), at
          end
        end
        if m.replacement ~= nil then
          if type(m.replacement) ~= "string" then
            return fail(m, "replacement", path .. ".replacement", "expected a model name")
          end
          entry.replacement = m.replacement
          replacements[#replacements + 1] = { f = f, m = m, path = path, fail = fail }
        end
        for i, t in ipairs(targets) do
          local tp = path .. ".targets[" .. i .. "]"
          if type(t) ~= "table" or type(t.backend) ~= "string" then
            return fail(targets, i, tp, "expected { backend: NAME, model: PROVIDER_MODEL }")
          end
          if not backends[t.backend] then
            return fail(t, "backend", tp .. ".backend", "no backend named '" .. t.backend .. "'")
          end
          if t.model ~= nil and type(t.model) ~= "string" then
            return fail(t, "model", tp .. ".model", "expected a string")
          end
          entry.targets[i] = { backend = t.backend, model = t.model or name }
        end
        for _, n in ipairs({ name, unpack(type(m.aliases) == "table" and m.aliases or {}) }) do
          if cat.names[n] then
            return fail(models, name, path, "the name '" .. tostring(n) .. "' is used twice")
          end
          cat.names[n] = entry
        end
        cat.list[#cat.list + 1] = entry
        any = true
      end
    end
  end
  if not any then return false end
  for _, r in ipairs(replacements) do
    if not cat.names[r.m.replacement] then
      return r.fail(r.m, "replacement", r.path .. ".replacement",
                    "no model named '" .. r.m.replacement .. "' in the catalog")
    end
  end
  table.sort(cat.list, function(a, b) return a.name < b.name end)
  return cat
end

-- The catalog's targets for `entry` (or `chosen`, a plugin's list of
-- { backend, model? }) with what plugins may judge them by.
local function describe_targets(chain, entry, chosen)
  local out = {}
  local by_backend
  if chosen and entry then
    by_backend = {}
    for _, t in ipairs(entry.targets) do by_backend[t.backend] = by_backend[t.backend] or t.model end
  end
  for i, t in ipairs(chosen or entry.targets) do
    local be = chain.backends[t.backend] or {}
    local classes
    if be.data_classes then
      classes = {}
      for j, c in ipairs(be.data_classes) do classes[j] = c end
    end
    out[i] = { backend = t.backend,
               model = t.model or (by_backend and by_backend[t.backend]) or (entry and entry.name),
               provider = be.provider, region = be.region, data_classes = classes }
  end
  return out
end

-- A plugin chose targets: ctx.route.targets shows them from now on.
ctxmod.on_targets = function(st, list)
  st.route = st.route or {}
  st.route.targets = describe_targets(st.chain, st.entry, list)
end

ctxmod.default_route = function(st)
  local chain = st.chain
  local name = chain and chain.default_backend
  if not name or not chain.backends[name] then return nil end
  return { targets = describe_targets(chain, nil, { { backend = name } }) }
end

-- Before access: which door, which catalog entry, which targets — so that
-- plugins can judge the request (ctx.model, ctx.route.targets). Nothing is
-- refused here: an unknown model is refused after access, so that a
-- caller who is not authenticated learns nothing about the catalog.
function M.resolve(chain, st, method, path)
  local cat = chain.catalog
  if not cat then return end
  local door = DOORS[method .. " " .. path]
  if not door or door.op == "models" then return end
  st.door = door
  local body = st.request:json()
  if type(body) ~= "table" then return end
  local requested = body.model
  if type(requested) ~= "string" then return end
  local entry = cat.names[requested]
  st.entry = entry
  st.model = { requested = requested, op = door.op, stream = body.stream == true,
               name = entry and entry.name, deprecated = entry and entry.deprecated,
               sunset = entry and entry.sunset, replacement = entry and entry.replacement,
               deprecated_at = entry and entry.deprecated_at, sunset_at = entry and entry.sunset_at }
  if entry then st.route = { targets = describe_targets(chain, entry) } end
end

-- ---- requests ------------------------------------------------------------------

local function deny(status, code, message)
  return "deny", status, code, message
end

-- What this caller may use: the consumer's allowlist (when it has one)
-- and the models a live exception grants it, less those past their sunset.
-- (No closures on the request path: a function that creates one is not
-- compiled by LuaJIT — its returns close upvalues, which traces cannot.)
local function model_list(cat, consumer, live)
  local allowed = type(consumer) == "table" and type(consumer.models) == "table" and consumer.models
  local set
  if allowed then
    set = {}
    for _, n in ipairs(allowed) do set[n] = true end
  end
  local now = os.time()
  local data = {}
  for _, e in ipairs(cat.list) do
    local ok = not set or set[e.name] or set["*"] or
      exceptions.find(live, consumer, "models", e.name, now) ~= nil
    if ok and not (e.sunset_at and now >= e.sunset_at) then
      data[#data + 1] = { id = e.name, object = "model", created = 0, owned_by = "sluice" }
    end
  end
  if #data == 0 then data = json.empty_array() end
  return json.encode({ object = "list", data = data })
end

-- After access and route: nil when the request is not for a front door
-- (it then passes through as before), else one of
--   "ok", targets (names), public model
--   "respond", status, body
--   "deny", status, code, message
function M.request(chain, st, method, path)
  local cat = chain.catalog
  if not cat then return nil end
  local door = DOORS[method .. " " .. path]
  if not door then
    -- With a catalog, models leave only through the front doors, where
    -- every plugin sees them: another call naming a model (/v1/responses,
    -- /v1/completions, a provider's own paths) is refused. Calls without
    -- one (files, batches, …) pass through — under /v1/ only, and only to
    -- a default backend that speaks the OpenAI API.
    local raw = st.request:body()
    if raw:find('"model"', 1, true) then
      local j = st.request:json()
      if type(j) == "table" and j.model ~= nil then
        return deny(404, "not_found", ("%s %s is not served here: models are called through "
          .. "/v1/chat/completions, /v1/embeddings or /v1/messages"):format(method, path))
      end
    end
    local be = chain.default_backend and chain.backends[chain.default_backend]
    if path:sub(1, 4) ~= "/v1/" or not be or adapter(be.provider).family ~= "openai" then
      return deny(404, "not_found", ("%s %s is not served here"):format(method, path))
    end
    return nil
  end
  if door.op == "models" then
    return "respond", 200, model_list(cat, st.consumer, chain.exceptions)
  end
  local body, err = st.request:json()
  if body == nil then
    return deny(400, "invalid_json", "the request body is not valid JSON: " .. tostring(err))
  end
  if type(body) ~= "table" then
    return deny(400, "invalid_request", "the request body must be a JSON object")
  end
  local internal = body
  if door.front == "anthropic" then
    local ierr
    internal, ierr = anthropic_front().to_internal(body)
    if not internal then
      return deny(ierr and ierr.status or 400, ierr and ierr.code or "invalid_request",
                  ierr and ierr.message or "the request cannot be read")
    end
  end
  local model = internal.model
  if type(model) ~= "string" or model == "" then
    return deny(400, "invalid_request", "'model' is required")
  end
  local entry = cat.names[model]
  if not entry then
    return deny(404, "model_not_found", ("the model '%s' is not in the approved catalog"):format(model))
  end
  local targets = {}
  local names = {}
  if st.targets then -- a plugin chose backends: keep the catalog's models
    local by_backend = {}
    for _, t in ipairs(entry.targets) do by_backend[t.backend] = by_backend[t.backend] or t.model end
    for i, t in ipairs(st.targets) do
      targets[i] = { backend = t.backend, model = t.model or by_backend[t.backend] or entry.name }
      names[i] = t.backend
    end
  else
    for _, t in ipairs(entry.targets) do
      if not st.confined or st.confined[t.backend] then
        targets[#targets + 1] = t
        names[#names + 1] = t.backend
      end
    end
    if #targets == 0 then
      return deny(403, "data_boundary", st.confined_why or "no backend this request may go to serves it")
    end
  end
  st.ai = { door = door, internal = internal, entry = entry, targets = targets,
            public = entry.name, stream = internal.stream == true }
  return "ok", names, entry.name
end

-- The bytes the request's table was decoded from, when they still say
-- exactly what it holds: the OpenAI door (no translation) and no plugin
-- replaced the body with set_json since (edits go through set_json; a
-- table changed in place without it is not sent, as for any request).
local function raw_body(st, ai)
  if ai.door.front ~= "openai" or st.json_dirty or st.json ~= ai.internal then return nil end
  local raw = st.body
  return type(raw) == "string" and raw or nil
end

local function copy(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for k, x in pairs(v) do c[k] = copy(x) end
  -- sluice.json's array/object markers are locked: getmetatable gives
  -- their names, the module the tables themselves
  local mt = getmetatable(v)
  if type(mt) == "string" then mt = json[mt] end
  return setmetatable(c, mt)
end

local function percent(c) return ("%%%02X"):format(c:byte()) end

local function query_string(q)
  if type(q) ~= "table" then return "" end
  local parts = {}
  for k, v in pairs(q) do
    parts[#parts + 1] = tostring(k) .. "=" .. tostring(v):gsub("[^%w%-._~]", percent)
  end
  table.sort(parts)
  return #parts > 0 and ("?" .. concat(parts, "&")) or ""
end

-- Attempt `n` toward backend `name`: "ok", path, headers (flat), body, or
-- "deny", status, code, message (the provider cannot take this request).
function M.prepare(chain, st, n, name)
  local ai = st.ai
  local t = ai.targets[n]
  local be = chain.backends[name]
  local P = adapter(be.provider)
  local target = { model = t.model, base_path = be.base_path, api_version = be.api_version,
                   deployment = t.model, public_model = ai.public, now = os.time() }
  -- adapters may edit the request in place: later attempts need it whole
  local req = #ai.targets > 1 and copy(ai.internal) or ai.internal
  local res, err
  if ai.door.op == "embeddings" then
    if not P.embeddings_request then
      return deny(400, "unsupported_feature", ("provider %s has no embeddings"):format(be.provider))
    end
    res, err = P.embeddings_request(req, target)
  else
    res, err = P.chat_request(req, target, raw_body(st, ai))
  end
  if not res then
    return deny(err and err.status or 400, err and err.code or "unsupported_feature",
                err and err.message or "the provider cannot take this request")
  end
  local flat, seen = {}, {}
  for k, v in pairs(res.headers or {}) do
    k = lower(k)
    flat[#flat + 1] = k
    flat[#flat + 1] = tostring(v)
    seen[k] = true
  end
  if not seen["content-type"] then
    flat[#flat + 1] = "content-type"
    flat[#flat + 1] = "application/json"
  end
  -- the client's own headers travel too (plugin edits included), unless
  -- the adapter set them or they belong to another API
  local hmap, horder = ctxmod.headers_of(st)
  for _, k in ipairs(horder) do
    local v = hmap[k]
    if v and not seen[k] and not DROP[k] and k ~= "content-type" then
      flat[#flat + 1] = k
      flat[#flat + 1] = v
    end
  end
  local body = res.body_bytes or json.encode(res.body)
  -- used only when the provider reports no usage
  target.prompt_tokens_estimate = res.prompt_tokens_estimate
  ai.attempt = { P = P, target = target, prepared = res, state = nil }
  return "ok", (res.path or "") .. query_string(res.query), flat, body
end

-- ---- answers ---------------------------------------------------------------------

local function sse(data)
  return "data: " .. data .. "\n\n"
end

-- A chunk: a table, "[DONE]", or (adapters that keep bytes) its JSON text.
local function encode_chunk(c)
  if type(c) == "string" then return sse(c) end
  return sse(json.encode(c))
end

local function anthropic_events(events, out)
  for _, ev in ipairs(events or {}) do
    out[#out + 1] = "event: " .. ev.event .. "\n" .. sse(json.encode(ev.data))
  end
end

-- One SSE event's text → { event = name|nil, data = joined data lines }.
local function parse_event(text)
  local ev, data = nil, {}
  for line in text:gmatch("[^\r\n]+") do
    local k, v = line:match("^(%w+):%s?(.*)$")
    if k == "event" then ev = v elseif k == "data" then data[#data + 1] = v end
  end
  if #data == 0 and not ev then return nil end
  return { event = ev, data = concat(data, "\n") }
end

-- The whole body of a non-streamed answer (or an error).
local function whole(st, data)
  local ai, a = st.ai, st.ai.attempt
  local status = st.response and st.response.status or 200
  local anth = ai.door.front == "anthropic"
  if status >= 400 then
    local e = a.P.error_response(status, data)
    if anth then return json.encode(anthropic_front().error(e, status)) end
    return json.encode(e)
  end
  local body, usage
  if not anth and ai.door.op == "chat" and a.P.chat_response_bytes then
    body, usage = a.P.chat_response_bytes(status, data, a.target)
    if body then
      st.usage = usage
      return body
    end
  end
  if ai.door.op == "embeddings" then
    body, usage = a.P.embeddings_response(status, data, a.target)
  else
    body, usage = a.P.chat_response(status, data, a.target)
  end
  if body == nil then -- an answer the adapter cannot read: a gateway error
    local err = usage or {}
    st.status_override = err.status or 502
    local e = { error = { message = err.message or "the backend's answer cannot be read",
                          type = "upstream_error", code = err.code or "upstream_invalid_response" } }
    if anth then return json.encode(anthropic_front().error(e, st.status_override)) end
    return json.encode(e)
  end
  st.usage = usage
  if anth then body = anthropic_front().from_internal(body, usage, ai.public) end
  return json.encode(body)
end

-- Chunks (OpenAI-shaped) into `out`, in the client door's shape.
local function emit(list, anth, a, out)
  for _, c in ipairs(list or {}) do
    if anth then
      anthropic_events(anthropic_front().stream_chunk(a.fstate, c), out)
    else
      out[#out + 1] = encode_chunk(c)
    end
  end
end

-- Translate one piece of the answer (see runtime.body_filter).
function M.translate(st, data, last)
  local ai = st.ai
  local a = ai.attempt
  local streaming = st.response and st.response.headers and
    tostring(st.response.headers["content-type"] or ""):find("text/event-stream", 1, true)
  if not streaming then return whole(st, data) end
  local out = {}
  local anth = ai.door.front == "anthropic"
  if not a.state then
    a.state = a.P.stream_start(a.target, a.prepared)
    if anth then a.fstate = anthropic_front().stream_start(ai.public) end
  end
  local ev = data ~= "" and parse_event(data) or nil
  if ev then
    local list, usage = a.P.stream_event(a.state, ev, not anth)
    if usage then st.usage = usage end
    emit(list, anth, a, out)
  end
  if last then
    local list, usage = a.P.stream_end(a.state)
    if usage then st.usage = usage end
    emit(list, anth, a, out)
    if anth then anthropic_events(anthropic_front().stream_end(a.fstate, st.usage), out) end
  end
  return concat(out)
end

return M
