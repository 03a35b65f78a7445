-- openai_family.lua — the adapter shared by backends that already speak the
-- OpenAI API (openai, azure, openai_compat). The internal form IS their
-- form, so a request is passed on as the same table with only the model
-- (or the URL) and stream_options changed; responses get the public model
-- name and their usage read. What differs between the three (paths, query,
-- credential header, small body fix-ups) comes in as `spec`.
local json = require "sluice.json"
local common = require "sluice.providers.common"

local M = {}

local type, ipairs, tostring, error, setmetatable = type, ipairs, tostring, error, setmetatable
local find, sub, byte = string.find, string.sub, string.byte
local val = common.val
local locate, encode, decode = json.locate, json.encode, json.decode -- locate: nil in older binaries
local EMPTY = setmetatable({}, { __newindex = function() error("read-only", 2) end })

local function usage_of(u, source)
  local p, c = val(u.prompt_tokens), val(u.completion_tokens)
  return common.usage(type(p) == "number" and p or 0, type(c) == "number" and c or 0, source)
end

local function input_bytes(input)
  input = val(input)
  if type(input) == "string" then return #input end
  local n = 0
  if type(input) == "table" then
    for _, s in ipairs(input) do
      if type(s) == "string" then n = n + #s end
    end
  end
  return n
end

-- Bytes of generated text in a non-streamed body's choices.
local function choices_bytes(body)
  local n = 0
  local choices = val(body.choices)
  if type(choices) ~= "table" then return 0 end
  for _, ch in ipairs(choices) do
    local m = type(ch) == "table" and val(ch.message)
    if type(m) == "table" then
      local t = common.text_of(m.content)
      if t then n = n + #t end
      local calls = val(m.tool_calls)
      if type(calls) == "table" then
        for _, tc in ipairs(calls) do
          local f = type(tc) == "table" and val(tc["function"])
          if type(f) == "table" and type(f.arguments) == "string" then n = n + #f.arguments end
        end
      end
    end
  end
  return n
end

-- Safety results in an answer or a chunk into target.moderation (see
-- common.lua): Azure's prompt_filter_results (prompt_annotations in older
-- API versions) and per-choice content_filter_results, and any choice
-- ending with finish_reason content_filter. Nothing is created for an
-- answer that carries none of these. The document is not changed.
local function read_moderation(doc, target, source)
  if not target then return end
  local m
  local pf = val(doc.prompt_filter_results)
  if pf == nil then pf = val(doc.prompt_annotations) end
  if type(pf) == "table" then
    for _, p in ipairs(pf) do
      local r = type(p) == "table" and val(p.content_filter_results)
      if type(r) == "table" then
        m = m or common.moderation(target, source)
        common.azure_filters(m, common.moderation_prompt(m), r)
      end
    end
  end
  local choices = val(doc.choices)
  if type(choices) ~= "table" then return end
  for _, ch in ipairs(choices) do
    if type(ch) == "table" then
      local r = val(ch.content_filter_results)
      if type(r) == "table" then
        m = m or common.moderation(target, source)
        common.azure_filters(m, m, r)
      end
      if val(ch.finish_reason) == "content_filter" then
        m = m or common.moderation(target, source)
        common.moderation_block(m, m, "content_filter")
      end
    end
  end
end
M.read_moderation = read_moderation

-- ---- bytes instead of tables ----------------------------------------------
--
-- Between the OpenAI front door and an OpenAI-family backend the bodies are
-- already in the right shape: only `model` changes (and stream_options may
-- be added), so the bytes are spliced instead of decoded and re-encoded.
-- json.locate vouches that the splice reads exactly as the decoded table
-- would (no repeated keys, no escaped keys); anything it cannot vouch for,
-- or that carries what only a decode can read, takes the table path.

-- s with the value at from..to replaced by the JSON string v (unchanged
-- when it already is that string).
local function put_string(s, from, to, v)
  local enc = encode(v)
  if to - from + 1 == #enc and sub(s, from, to) == enc then return s end
  return sub(s, 1, from - 1) .. enc .. sub(s, to + 1)
end

-- Safety results (Azure's filters, finish_reason content_filter) need the
-- decoded document: an answer that may hold any takes the table path, and
-- so does one with an ASCII character written as \u00XX (the words above
-- could hide behind one).
local function may_moderate(s)
  if find(s, "content_filter", 1, true) or find(s, "prompt_filter", 1, true) or
    find(s, "prompt_annotations", 1, true) then
    return true
  end
  local i = find(s, "\\u00", 1, true)
  while i do
    local c = byte(s, i + 4)
    if c and c >= 48 and c <= 55 then return true end -- \u0000 to \u007F
    i = find(s, "\\u00", i + 4, true)
  end
  return false
end

-- The OpenAI error table for an OpenAI-shaped (or unreadable) error body.
function M.error_from(provider, status, body)
  local doc = common.decode(body)
  if type(doc) == "table" and doc.error == nil and type(doc[1]) == "table" then
    doc = doc[1] -- some compatible servers answer with a list
  end
  local e = type(doc) == "table" and val(doc.error)
  if type(e) == "string" then -- {"error": "model not found"} (Ollama and others)
    return common.error_table(e, common.type_for_status(status), "upstream_error")
  end
  if type(e) ~= "table" or type(val(e.message)) ~= "string" then
    return common.opaque_error(provider, status)
  end
  local code = val(e.code)
  if code ~= nil and type(code) ~= "string" then code = tostring(code) end
  local etype = val(e.type)
  if type(etype) ~= "string" or etype == "" then etype = common.type_for_status(status) end
  return common.error_table(e.message, etype, code)
end

-- spec = { name, root = API root when base_path is empty,
--          chat_path(target), embeddings_path(target), query(target) | nil,
--          header = credential header name, prefix = "Bearer " | nil,
--          keep_model = false to drop `model` from the body (azure),
--          fix_request(req) | nil }
function M.new(spec)
  local P = { name = spec.name, family = "openai" }
  local name = spec.name

  local function place_model(req, target)
    if spec.keep_model == false then req.model = nil else req.model = target.model end
  end

  -- The request's bytes: raw (what req was decoded from) with the model
  -- replaced and stream_options added when it was absent; nil when the
  -- table must be encoded instead.
  local function splice_request(raw, target, added_options)
    if not locate or spec.fix_request or spec.keep_model == false or type(target.model) ~= "string" then
      return nil
    end
    local ok, mf, mt, sf = locate(raw, "model", "stream_options")
    if not ok or not mf or (added_options and sf) then return nil end
    local out = put_string(raw, mf, mt, target.model)
    if added_options then
      local brace = find(out, "{", 1, true)
      out = sub(out, 1, brace) .. '"stream_options":{"include_usage":true},' .. sub(out, brace + 1)
    end
    return out
  end

  -- raw: the bytes req was decoded from, when nothing changed it since
  -- (the front door knows); the answer then carries them as body_bytes.
  function P.chat_request(req, target, raw)
    if type(req) ~= "table" then
      return nil, common.invalid("the request body must be a JSON object")
    end
    place_model(req, target)
    if spec.fix_request then spec.fix_request(req) end
    local strip, added = false, false
    if req.stream == true then
      local so = val(req.stream_options)
      local asked = type(so) == "table" and so.include_usage == true
      if not asked and target.stream_usage ~= false then
        if type(so) ~= "table" then
          added = so == nil
          so = {}
          req.stream_options = so
        end
        so.include_usage = true
        strip = true
      end
    end
    local bytes = type(raw) == "string" and splice_request(raw, target, added) or nil
    if strip and not added then bytes = nil end -- stream_options edited: encode
    return {
      body_bytes = bytes,
      method = "POST",
      path = common.root(target, spec.root) .. spec.chat_path(target),
      query = spec.query and spec.query(target) or nil,
      headers = common.headers(spec.header, target.credential, spec.prefix),
      body = req,
      stream = req.stream == true,
      strip_usage_chunk = strip,
      prompt_tokens_estimate = common.estimate(common.request_bytes(req)),
    }
  end

  -- A success body as a table carrying the public model name, or nil and
  -- the gateway error for an answer that is not JSON.
  local function answer_of(body, target)
    local doc = common.decode(body)
    if type(doc) ~= "table" then
      return nil, { status = 502, code = "upstream_invalid_response",
                    message = "the " .. name .. " backend sent a response that is not JSON" }
    end
    if target and target.public_model then doc.model = target.public_model end
    return doc
  end

  -- A success body's bytes with the public model name, and its usage; nil
  -- when the table path must read it (no usage reported, safety results,
  -- no model member to rename, or bytes json.locate cannot vouch for).
  function P.chat_response_bytes(status, body, target)
    if not locate or type(body) ~= "string" or may_moderate(body) then return nil end
    local ok, mf, mt, uf, ut = locate(body, "model", "usage")
    if not ok or not uf then return nil end
    local u = decode(sub(body, uf, ut))
    if type(u) ~= "table" then return nil end
    local public = target and target.public_model
    if public then
      if not mf then return nil end
      body = put_string(body, mf, mt, public)
    end
    return body, usage_of(u, "reported")
  end

  function P.chat_response(status, body, target)
    local doc, err = answer_of(body, target)
    if not doc then return nil, err end
    read_moderation(doc, target, name)
    local u = val(doc.usage)
    if type(u) == "table" then return doc, usage_of(u, "reported") end
    return doc, common.usage(target and target.prompt_tokens_estimate or 0,
      common.estimate(choices_bytes(doc)), "estimated")
  end

  function P.error_response(status, body)
    return M.error_from(name, status, body)
  end

  -- ---- streaming ----------------------------------------------------------

  -- request: the table chat_request returned (its strip_usage_chunk and
  -- prompt_tokens_estimate); target.strip_usage_chunk is read too.
  function P.stream_start(target, request)
    local moderation_target = target -- where stream_event leaves safety results
    target = target or EMPTY
    request = request or EMPTY
    return {
      strip = request.strip_usage_chunk == true or target.strip_usage_chunk == true,
      public_model = target.public_model,
      prompt_est = request.prompt_tokens_estimate or target.prompt_tokens_estimate or 0,
      bytes = 0, done = false, finished = false, errored = false, usage = nil,
      target = moderation_target,
    }
  end

  -- A chunk without usage, error or safety results: its bytes with the
  -- model renamed, reading only its choices; nil for the table path.
  local function event_bytes(state, data)
    if not locate or may_moderate(data) then return nil end
    local ok, mf, mt, cf, ct, uf, ut, ef = locate(data, "model", "choices", "usage", "error")
    if not ok or ef or (uf and sub(data, uf, ut) ~= "null") then return nil end
    -- the stream's end and generated bytes (the estimate without usage)
    local choices = cf and decode(sub(data, cf, ct))
    if mf and state.public_model then data = put_string(data, mf, mt, state.public_model) end
    if type(choices) == "table" then
      for i = 1, #choices do
        local ch = choices[i]
        if type(ch) == "table" then
          if val(ch.finish_reason) ~= nil then state.finished = true end
          local d = val(ch.delta)
          if type(d) == "table" and type(d.content) == "string" then
            state.bytes = state.bytes + #d.content
          end
        end
      end
    end
    return data
  end

  -- as_bytes: the caller takes a chunk as its JSON text (a string) too.
  function P.stream_event(state, ev, as_bytes)
    local data = ev.data
    if data == "[DONE]" then
      if state.done then return EMPTY end
      state.done = true
      return { "[DONE]" }
    end
    if as_bytes then
      local out = event_bytes(state, data)
      if out then return { out } end
    end
    local chunk = json.decode(data)
    if type(chunk) ~= "table" then return EMPTY, nil, "unreadable stream event from " .. name end
    if val(chunk.error) ~= nil then
      state.errored = true
      return { M.error_from(name, 500, chunk) }
    end
    if state.public_model and chunk.model ~= nil then chunk.model = state.public_model end
    read_moderation(chunk, state.target, name)
    local usage
    local u = val(chunk.usage)
    if type(u) == "table" then
      usage = usage_of(u, "reported")
      state.usage = usage
    end
    local choices = val(chunk.choices)
    local nchoices = type(choices) == "table" and #choices or 0
    if usage and state.strip then
      if nchoices == 0 then return EMPTY, usage end
      chunk.usage = nil -- usage riding on a content chunk: keep the content
    end
    for i = 1, nchoices do
      local ch = choices[i]
      if type(ch) == "table" then
        if val(ch.finish_reason) ~= nil then state.finished = true end
        local d = val(ch.delta)
        if type(d) == "table" and type(d.content) == "string" then
          state.bytes = state.bytes + #d.content
        end
      end
    end
    return { chunk }, usage
  end

  function P.stream_end(state)
    local out = EMPTY
    if not state.done and not state.errored then
      state.done = true
      if state.finished then
        out = { "[DONE]" }
      else
        state.errored = true
        out = { common.error_table("the " .. name .. " backend ended the stream before it finished",
          "api_error", "upstream_truncated") }
      end
    end
    return out, state.usage or common.usage(state.prompt_est, common.estimate(state.bytes), "estimated")
  end

  -- ---- embeddings ----------------------------------------------------------

  function P.embeddings_request(req, target)
    if type(req) ~= "table" then
      return nil, common.invalid("the request body must be a JSON object")
    end
    place_model(req, target)
    return {
      method = "POST",
      path = common.root(target, spec.root) .. spec.embeddings_path(target),
      query = spec.query and spec.query(target) or nil,
      headers = common.headers(spec.header, target.credential, spec.prefix),
      body = req,
      stream = false,
      prompt_tokens_estimate = common.estimate(input_bytes(req.input)),
    }
  end

  function P.embeddings_response(status, body, target)
    local doc, err = answer_of(body, target)
    if not doc then return nil, err end
    local u = val(doc.usage)
    if type(u) == "table" then
      local p = val(u.prompt_tokens)
      return doc, common.usage(type(p) == "number" and p or 0, 0, "reported")
    end
    return doc, common.usage(target and target.prompt_tokens_estimate or 0, 0, "estimated")
  end

  return P
end

return M
