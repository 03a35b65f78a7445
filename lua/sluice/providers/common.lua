-- common.lua — the small pieces every provider adapter shares: the error
-- tables adapters return, reading OpenAI content parts, data: URLs, the
-- OpenAI error types by HTTP status, and the token estimate used when a
-- provider reports no usage. Pure functions; no I/O, no globals.
local json = require "sluice.json"

local M = {}

local type, pairs, ipairs, tostring, next, ceil = type, pairs, ipairs, tostring, next, math.ceil
local concat, sort = table.concat, table.sort
local null = json.null
M.null = null

-- nil for JSON null as well as for a missing value.
local function val(x)
  if x == null then return nil end
  return x
end
M.val = val

-- The error an adapter returns with nil: status, code and a message that
-- names the feature and the provider.
function M.unsupported(provider, feature)
  return { status = 400, code = "unsupported_feature",
           message = feature .. " is not supported by the " .. provider .. " provider" }
end

function M.invalid(message)
  return { status = 400, code = "invalid_request", message = message }
end

-- The API root added to paths when the backend URL has no path of its own
-- (see README: "Paths").
function M.root(target, default)
  local bp = target and target.base_path
  if bp == nil or bp == "" or bp == "/" then return default end
  return ""
end

-- Request headers: content-type plus the credential, if any.
function M.headers(name, value, prefix)
  local h = { ["content-type"] = "application/json" }
  if value ~= nil and value ~= "" then h[name] = (prefix or "") .. value end
  return h
end

-- "data:image/png;base64,AAAA" -> "image/png", "AAAA"; nil for anything else.
function M.data_url(url)
  if type(url) ~= "string" or url:sub(1, 5) ~= "data:" then return nil end
  local comma = url:find(",", 6, true)
  if not comma then return nil end
  local meta = url:sub(6, comma - 1)
  if meta:sub(-7) ~= ";base64" then return nil end
  local mime = meta:sub(1, -8)
  if mime == "" then mime = "application/octet-stream" end
  return mime, url:sub(comma + 1)
end

-- The text of an OpenAI message content (string, or a list of parts of
-- which only text parts count); nil when there is none.
function M.text_of(content)
  content = val(content)
  if content == nil then return nil end
  if type(content) == "string" then return content end
  if type(content) ~= "table" then return nil end
  local out = {}
  for _, p in ipairs(content) do
    if type(p) == "table" and p.type == "text" and type(p.text) == "string" then
      out[#out + 1] = p.text
    end
  end
  if #out == 0 then return nil end
  return concat(out)
end

-- A JSON array for encoding, even when empty.
function M.array(t)
  if t == nil or next(t) == nil then return json.empty_array() end
  return t
end

-- Decode a string body (tables pass through). Returns value or nil.
function M.decode(body)
  if type(body) == "table" then return body end
  if type(body) ~= "string" or body == "" then return nil end
  local v = json.decode(body)
  return v
end

-- A list of numbers as OpenAI's base64 embedding: float32, little-endian
-- (the byte order of every machine sluice runs on), base64-encoded.
function M.base64_floats(values)
  local ffi = require "ffi"
  local n = type(values) == "table" and #values or 0
  local buf = ffi.new("float[?]", n > 0 and n or 1)
  for i = 1, n do buf[i - 1] = tonumber(values[i]) or 0 end
  return require("sluice.hash").base64_encode(ffi.string(buf, 4 * n))
end

-- ~4 bytes a token: the estimate stated as source = "estimated".
function M.estimate(bytes)
  if not bytes or bytes <= 0 then return 0 end
  return ceil(bytes / 4)
end

-- Bytes of text in an OpenAI chat request, for a prompt estimate.
function M.request_bytes(req)
  local n = 0
  local msgs = type(req) == "table" and val(req.messages)
  if type(msgs) ~= "table" then return 0 end
  for _, m in ipairs(msgs) do
    if type(m) == "table" then
      local t = M.text_of(m.content)
      if t then n = n + #t end
    end
  end
  return n
end

function M.usage(prompt, completion, source)
  prompt, completion = prompt or 0, completion or 0
  return { prompt_tokens = prompt, completion_tokens = completion,
           total_tokens = prompt + completion, source = source or "reported" }
end

-- ---- moderation -----------------------------------------------------------------
--
-- What a provider's safety system said about an answer, in one shape for
-- every provider, left on the attempt's target as target.moderation:
--   { source = provider name,
--     flagged = any category above "safe", anything filtered or blocked
--               (answer or prompt),
--     blocked = the provider withheld content (a filtered category,
--               finish_reason content_filter, Gemini SAFETY / blockReason,
--               Anthropic refusal), answer or prompt,
--     reason = the provider's own word for a block, or nil,
--     categories = { hate = { severity = "safe"|"low"|"medium"|"high",
--                             filtered = bool }, … }   (the answer's),
--     prompt = { flagged, blocked, reason, categories } | nil }
-- Category names are lower-case (Azure's as given; Gemini's without
-- HARM_CATEGORY_, HATE_SPEECH as hate, SEXUALLY_EXPLICIT as sexual,
-- DANGEROUS_CONTENT as dangerous). Detection-only categories (Azure
-- jailbreak, protected_material_*) count as "high" when detected.

M.SEVERITY = { safe = 0, low = 1, medium = 2, high = 3 }
local SEVERITY, SEVERITY_NAME = M.SEVERITY, { [0] = "safe", "low", "medium", "high" }

local function side()
  return { flagged = false, blocked = false, categories = {} }
end

-- The target's moderation result, created on first use.
function M.moderation(target, source)
  local m = target.moderation
  if not m then
    m = side()
    m.source = source
    target.moderation = m
  end
  return m
end

-- The prompt side of a moderation result, created on first use.
function M.moderation_prompt(m)
  local p = m.prompt
  if not p then p = side(); m.prompt = p end
  return p
end

-- Record one category on a side `s` (a result or its prompt) of result m;
-- a category seen twice (several choices, stream events) keeps the worst.
function M.moderation_category(m, s, name, severity, filtered)
  local rank = SEVERITY[severity] or 0
  local c = s.categories[name]
  if c then
    if (SEVERITY[c.severity] or 0) > rank then rank = SEVERITY[c.severity] end
    filtered = filtered or c.filtered
  end
  s.categories[name] = { severity = SEVERITY_NAME[rank], filtered = filtered == true }
  if rank > 0 or filtered then s.flagged, m.flagged = true, true end
  if filtered then s.blocked, m.blocked = true, true end
end

-- The provider withheld content on side s, for `reason`.
function M.moderation_block(m, s, reason)
  s.flagged, s.blocked, m.flagged, m.blocked = true, true, true, true
  if s.reason == nil then s.reason = reason end
  if m.reason == nil then m.reason = reason end
end

-- Azure's content_filter_results (one choice, or one prompt) into side s.
function M.azure_filters(m, s, results)
  if type(results) ~= "table" then return end
  for name, r in pairs(results) do
    if type(name) == "string" and type(r) == "table" and name ~= "error" then
      local sev = val(r.severity)
      local detected = val(r.detected)
      if type(sev) ~= "string" then sev = detected == true and "high" or "safe" end
      M.moderation_category(m, s, name, sev, val(r.filtered) == true)
    end
  end
end

-- The OpenAI error type for an HTTP status.
local TYPE_BY_STATUS = {
  [400] = "invalid_request_error", [401] = "authentication_error",
  [403] = "permission_error", [404] = "not_found_error",
  [409] = "invalid_request_error", [413] = "invalid_request_error",
  [422] = "invalid_request_error", [429] = "rate_limit_error",
}
function M.type_for_status(status)
  return TYPE_BY_STATUS[status] or (status and status >= 500 and "api_error") or "invalid_request_error"
end

function M.error_table(message, etype, code)
  return { error = { message = message, type = etype, code = code == nil and null or code } }
end

-- The OpenAI error for a body nobody could read.
function M.opaque_error(provider, status)
  return M.error_table(("the %s backend returned HTTP %s"):format(provider, tostring(status)),
    M.type_for_status(status), "upstream_error")
end

-- OpenAI sampling fields a translating adapter may drop only when they ask
-- for the default (anything else would change the answer silently).
M.DEFAULT_ONLY = {
  frequency_penalty = 0, presence_penalty = 0, logprobs = false, n = 1,
  parallel_tool_calls = true,
}

-- Keys of `req` not in `known`: nil, or the sorted list joined.
function M.unknown_keys(req, known)
  local bad
  for k in pairs(req) do
    if not known[k] then
      bad = bad or {}
      bad[#bad + 1] = tostring(k)
    end
  end
  if not bad then return nil end
  sort(bad)
  return concat(bad, ", ")
end

return M
