-- gemini.lua — Google Gemini (generativelanguage.googleapis.com) behind the
-- OpenAI front door: generateContent / streamGenerateContent?alt=sse and
-- batchEmbedContents. System and developer messages become
-- systemInstruction, assistant turns are role "model", tool calls are
-- functionCall parts and tool messages functionResponse parts (named by the
-- tool call they answer), data: images are inlineData. JSON mode maps to
-- responseMimeType / responseSchema; JSON Schemas are rewritten to Gemini's
-- OpenAPI subset (types upper-cased, ["t","null"] to nullable, keywords it
-- rejects such as additionalProperties dropped, $ref refused).
local json = require "sluice.json"
local common = require "sluice.providers.common"

local P = { name = "gemini", family = "gemini" }

local type, pairs, ipairs, tostring, next, getmetatable = type, pairs, ipairs, tostring, next, getmetatable
local concat = table.concat
local val, null = common.val, json.null
local NAME = "gemini"
local EMPTY = {}

local function unsupported(feature) return nil, common.unsupported(NAME, feature) end
local function invalid(msg) return nil, common.invalid(msg) end

-- "models/gemini-2.0-flash" or "gemini-2.0-flash" -> the escaped name.
local function model_name(m)
  m = tostring(m or ""):gsub("^models/", "")
  return (m:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- ---- JSON Schema -> Gemini Schema ---------------------------------------------

local SCHEMA_KEEP = {
  format = true, description = true, nullable = true, enum = true, maxItems = true,
  minItems = true, required = true, propertyOrdering = true, minimum = true,
  maximum = true, minLength = true, maxLength = true, pattern = true, title = true,
  default = true, example = true, minProperties = true, maxProperties = true,
}

local schema_of

local function schema_list(list)
  local out = {}
  for i, s in ipairs(list) do
    local v, err = schema_of(s)
    if v == nil then return nil, err end
    out[i] = v
  end
  return out
end

function schema_of(s)
  if type(s) ~= "table" then return s end
  if s["$ref"] ~= nil then return unsupported("JSON Schema $ref in a schema") end
  local out = {}
  for k, v in pairs(s) do
    if k == "type" then
      if type(v) == "table" then
        local main
        for _, t in ipairs(v) do
          if t == "null" then
            out.nullable = true
          elseif main then
            return unsupported("a schema type list with more than one non-null type")
          else
            main = t
          end
        end
        if main then out.type = main:upper() end
      elseif type(v) == "string" then
        out.type = v:upper()
      end
    elseif k == "properties" and type(v) == "table" then
      local props = {}
      for name, sub in pairs(v) do
        local conv, err = schema_of(sub)
        if conv == nil then return nil, err end
        props[name] = conv
      end
      out.properties = props
    elseif k == "items" then
      local conv, err = schema_of(v)
      if conv == nil then return nil, err end
      out.items = conv
    elseif k == "anyOf" and type(v) == "table" then
      local conv, err = schema_list(v)
      if not conv then return nil, err end
      out.anyOf = conv
    elseif SCHEMA_KEEP[k] then
      out[k] = v
    end -- additionalProperties, $schema, strict, $defs…: not in Gemini's subset
  end
  return out
end
P.schema_of = schema_of

-- ---- request ------------------------------------------------------------------

local KNOWN = {
  model = true, messages = true, max_tokens = true, max_completion_tokens = true,
  temperature = true, top_p = true, stop = true, stream = true, stream_options = true,
  tools = true, tool_choice = true, parallel_tool_calls = true, user = true,
  response_format = true, n = true, frequency_penalty = true, presence_penalty = true,
  logprobs = true, logit_bias = true, seed = true, store = true, metadata = true,
  service_tier = true, modalities = true,
}

local function part_of(p)
  if type(p) ~= "table" then return invalid("a content part must be an object") end
  if p.type == "text" then return { text = p.text } end
  if p.type == "image_url" then
    local iu = val(p.image_url)
    local url = type(iu) == "table" and iu.url or iu
    local mime, data = common.data_url(url)
    if not mime then return unsupported("image_url with a remote URL (send a data: URL)") end
    return { inlineData = { mimeType = mime, data = data } }
  end
  return unsupported("content part type '" .. tostring(p.type) .. "'")
end

local function parts_of(content, into)
  content = val(content)
  if content == nil then return into end
  if type(content) == "string" then
    if content ~= "" then into[#into + 1] = { text = content } end
    return into
  end
  if type(content) ~= "table" then return invalid("message content must be a string or a list of parts") end
  for _, p in ipairs(content) do
    local part, err = part_of(p)
    if not part then return nil, err end
    into[#into + 1] = part
  end
  return into
end

-- A tool message's content as the object functionResponse.response wants.
local function response_of(content)
  local text = common.text_of(content) or ""
  local v = json.decode(text)
  if type(v) == "table" and getmetatable(v) == "object_mt" then return v end
  return { content = text }
end

-- messages -> contents, systemInstruction; or nil, err.
local function convert_messages(msgs)
  if type(msgs) ~= "table" or #msgs == 0 then return invalid("messages must be a non-empty list") end
  local system, contents, names = {}, {}, {}
  local last
  local function push(role, parts)
    if #parts == 0 then return end
    if last and last.role == role then
      local c = last.parts
      for i = 1, #parts do c[#c + 1] = parts[i] end
    else
      last = { role = role, parts = parts }
      contents[#contents + 1] = last
    end
  end
  for _, m in ipairs(msgs) do
    if type(m) ~= "table" then return invalid("each message must be an object") end
    local role = m.role
    if role == "system" or role == "developer" then
      local parts, err = parts_of(m.content, system)
      if not parts then return nil, err end
    elseif role == "user" then
      local parts, err = parts_of(m.content, {})
      if not parts then return nil, err end
      push("user", parts)
    elseif role == "assistant" then
      local parts, err = parts_of(m.content, {})
      if not parts then return nil, err end
      local calls = val(m.tool_calls)
      if type(calls) == "table" then
        for _, tc in ipairs(calls) do
          local f = type(tc) == "table" and val(tc["function"])
          if type(f) ~= "table" or type(f.name) ~= "string" then return invalid("a tool call needs function.name") end
          local args = val(f.arguments)
          local input = {}
          if args ~= nil and args ~= "" then
            input = json.decode(args)
            if type(input) ~= "table" then
              return invalid("tool call '" .. f.name .. "' has arguments that are not a JSON object")
            end
          end
          if tc.id ~= nil then names[tc.id] = f.name end
          parts[#parts + 1] = { functionCall = { name = f.name, args = input } }
        end
      end
      if val(m.function_call) ~= nil then return unsupported("function_call (legacy functions)") end
      push("model", parts)
    elseif role == "tool" then
      local fname = names[m.tool_call_id]
      if not fname then
        return invalid("tool message answers tool_call_id '" .. tostring(m.tool_call_id)
          .. "', which no earlier assistant message called")
      end
      push("user", { { functionResponse = { name = fname, response = response_of(m.content) } } })
    else
      return unsupported("message role '" .. tostring(role) .. "'")
    end
  end
  if #contents == 0 then return invalid("messages must hold at least one user or assistant message") end
  return contents, #system > 0 and { parts = system } or nil
end

local function convert_tools(tools)
  local decls = {}
  for _, t in ipairs(tools) do
    if type(t) ~= "table" or t.type ~= "function" then
      return unsupported("tool type '" .. tostring(type(t) == "table" and t.type or t) .. "'")
    end
    local f = val(t["function"])
    if type(f) ~= "table" or type(f.name) ~= "string" then return invalid("a tool needs function.name") end
    local d = { name = f.name, description = val(f.description) }
    local params = val(f.parameters)
    -- Gemini refuses an OBJECT schema without properties: leave it out.
    if type(params) == "table" and type(params.properties) == "table" and next(params.properties) ~= nil then
      local s, err = schema_of(params)
      if s == nil then return nil, err end
      d.parameters = s
    end
    decls[#decls + 1] = d
  end
  return { { functionDeclarations = decls } }
end

local function convert_tool_choice(tc)
  tc = val(tc)
  if tc == nil or tc == "auto" then return { functionCallingConfig = { mode = "AUTO" } } end
  if tc == "none" then return { functionCallingConfig = { mode = "NONE" } } end
  if tc == "required" then return { functionCallingConfig = { mode = "ANY" } } end
  if type(tc) == "table" and tc.type == "function" and type(val(tc["function"])) == "table" then
    return { functionCallingConfig = { mode = "ANY", allowedFunctionNames = { tc["function"].name } } }
  end
  return invalid("tool_choice must be auto, none, required or a function")
end

function P.chat_request(req, target)
  if type(req) ~= "table" then return invalid("the request body must be a JSON object") end
  local bad = common.unknown_keys(req, KNOWN)
  if bad then return unsupported("the field(s) " .. bad) end
  local stream = req.stream == true
  local n = val(req.n)
  if n ~= nil and n ~= 1 and stream then return unsupported("n > 1 with stream") end
  if val(req.logprobs) == true then return unsupported("logprobs") end
  local lb = val(req.logit_bias)
  if type(lb) == "table" and next(lb) ~= nil then return unsupported("logit_bias") end
  local mods = val(req.modalities)
  if type(mods) == "table" then
    for _, m in ipairs(mods) do
      if m ~= "text" then return unsupported("modality '" .. tostring(m) .. "'") end
    end
  end

  local contents, system = convert_messages(val(req.messages))
  if not contents then return nil, system end

  local gc = {}
  gc.maxOutputTokens = val(req.max_completion_tokens) or val(req.max_tokens)
  gc.temperature = val(req.temperature)
  gc.topP = val(req.top_p)
  gc.candidateCount = n
  gc.seed = val(req.seed)
  gc.presencePenalty = val(req.presence_penalty)
  gc.frequencyPenalty = val(req.frequency_penalty)
  local stop = val(req.stop)
  if type(stop) == "string" then
    gc.stopSequences = { stop }
  elseif type(stop) == "table" and #stop > 0 then
    gc.stopSequences = stop
  end
  local rf = val(req.response_format)
  if type(rf) == "table" then
    if rf.type == "json_object" then
      gc.responseMimeType = "application/json"
    elseif rf.type == "json_schema" then
      local js = val(rf.json_schema)
      local schema = type(js) == "table" and val(js.schema)
      gc.responseMimeType = "application/json"
      if type(schema) == "table" then
        local s, err = schema_of(schema)
        if s == nil then return nil, err end
        gc.responseSchema = s
      end
    elseif rf.type ~= "text" then
      return unsupported("response_format " .. tostring(rf.type))
    end
  end

  local body = { contents = contents, systemInstruction = system }
  if next(gc) ~= nil then body.generationConfig = gc end
  local tools = val(req.tools)
  if type(tools) == "table" and #tools > 0 then
    local t, err = convert_tools(tools)
    if not t then return nil, err end
    body.tools = t
    local tc, terr = convert_tool_choice(req.tool_choice)
    if not tc then return nil, terr end
    body.toolConfig = tc
  end

  local so = val(req.stream_options)
  local path = common.root(target, "/v1beta") .. "/models/" .. model_name(target.model)
  return {
    method = "POST",
    path = path .. (stream and ":streamGenerateContent" or ":generateContent"),
    query = stream and { alt = "sse" } or nil,
    headers = common.headers("x-goog-api-key", target.credential),
    body = body,
    stream = stream,
    strip_usage_chunk = not (type(so) == "table" and so.include_usage == true),
    prompt_tokens_estimate = common.estimate(common.request_bytes(req)),
  }
end

-- ---- response -----------------------------------------------------------------

local FINISH = {
  STOP = "stop", MAX_TOKENS = "length", SAFETY = "content_filter",
  RECITATION = "content_filter", BLOCKLIST = "content_filter",
  PROHIBITED_CONTENT = "content_filter", SPII = "content_filter",
  IMAGE_SAFETY = "content_filter", LANGUAGE = "content_filter",
  MALFORMED_FUNCTION_CALL = "stop", OTHER = "stop", FINISH_REASON_UNSPECIFIED = "stop",
}
P.FINISH = FINISH

local function num(x) return type(x) == "number" and x or 0 end

-- ---- safety ratings -> target.moderation (common.lua) ---------------------------

local CATEGORY = {
  HARM_CATEGORY_HATE_SPEECH = "hate", HARM_CATEGORY_SEXUALLY_EXPLICIT = "sexual",
  HARM_CATEGORY_DANGEROUS_CONTENT = "dangerous", HARM_CATEGORY_HARASSMENT = "harassment",
  HARM_CATEGORY_CIVIC_INTEGRITY = "civic_integrity",
}
local PROBABILITY = { NEGLIGIBLE = "safe", LOW = "low", MEDIUM = "medium", HIGH = "high" }
-- Vertex AI also sends a severity; the worse of the two counts.
local SEVERITY = { HARM_SEVERITY_NEGLIGIBLE = "safe", HARM_SEVERITY_LOW = "low",
                   HARM_SEVERITY_MEDIUM = "medium", HARM_SEVERITY_HIGH = "high" }

local function ratings(m, side, list)
  if type(list) ~= "table" then return end
  for _, r in ipairs(list) do
    local cat = type(r) == "table" and val(r.category)
    if type(cat) == "string" then
      local name = CATEGORY[cat] or cat:gsub("^HARM_CATEGORY_", ""):lower()
      local sev = PROBABILITY[val(r.probability)] or "safe"
      local sev2 = SEVERITY[val(r.severity)]
      if sev2 and common.SEVERITY[sev2] > common.SEVERITY[sev] then sev = sev2 end
      common.moderation_category(m, side, name, sev, val(r.blocked) == true)
    end
  end
end

-- One GenerateContentResponse (whole, or a stream chunk) into
-- target.moderation: candidates' safetyRatings and safety finish reasons,
-- promptFeedback's safetyRatings and blockReason.
local function read_moderation(doc, target)
  if not target then return end
  local cands = val(doc.candidates)
  if type(cands) == "table" then
    for _, cand in ipairs(cands) do
      if type(cand) == "table" then
        local list, reason = val(cand.safetyRatings), val(cand.finishReason)
        local blocked = reason ~= nil and FINISH[reason] == "content_filter"
        if list ~= nil or blocked then
          local m = common.moderation(target, NAME)
          ratings(m, m, list)
          if blocked then common.moderation_block(m, m, reason) end
        end
      end
    end
  end
  local pf = val(doc.promptFeedback)
  if type(pf) == "table" then
    local m = common.moderation(target, NAME)
    local side = common.moderation_prompt(m)
    ratings(m, side, val(pf.safetyRatings))
    local br = val(pf.blockReason)
    if type(br) == "string" then common.moderation_block(m, side, br) end
  end
end
P.read_moderation = read_moderation

local function usage_of(um)
  local prompt = num(val(um.promptTokenCount)) + num(val(um.toolUsePromptTokenCount))
  local thoughts = num(val(um.thoughtsTokenCount))
  local completion = num(val(um.candidatesTokenCount)) + thoughts
  return prompt, completion, thoughts, num(val(um.cachedContentTokenCount))
end

local function openai_usage(um)
  local p, c, thoughts, cached = usage_of(um)
  return { prompt_tokens = p, completion_tokens = c, total_tokens = p + c,
           prompt_tokens_details = { cached_tokens = cached },
           completion_tokens_details = { reasoning_tokens = thoughts } }, common.usage(p, c, "reported")
end

-- One candidate's parts -> text (or nil), tool calls, bytes. `ncalls` numbers
-- the synthesized call ids across the response.
local function read_parts(parts, ncalls)
  local text, calls, bytes = {}, {}, 0
  if type(parts) ~= "table" then return nil, calls, 0, ncalls end
  for _, p in ipairs(parts) do
    if type(p) == "table" and p.thought ~= true then
      if type(p.text) == "string" then
        text[#text + 1] = p.text
        bytes = bytes + #p.text
      elseif type(val(p.functionCall)) == "table" then
        local fc = p.functionCall
        local args = json.encode(val(fc.args) or {}) or "{}"
        bytes = bytes + #args
        calls[#calls + 1] = { id = val(fc.id) or ("call_" .. ncalls), type = "function",
                              ["function"] = { name = fc.name, arguments = args } }
        ncalls = ncalls + 1
      end
    end
  end
  return #text > 0 and concat(text) or nil, calls, bytes, ncalls
end

local function finish_of(reason, has_calls)
  reason = val(reason)
  if reason == nil then return nil end
  local f = FINISH[reason] or "stop"
  if f == "stop" and has_calls then f = "tool_calls" end
  return f
end

function P.chat_response(status, body, target)
  local doc = common.decode(body)
  if type(doc) ~= "table" then
    return nil, { status = 502, code = "upstream_invalid_response",
                  message = "the gemini backend sent a response that is not JSON" }
  end
  read_moderation(doc, target)
  target = target or EMPTY
  local choices, bytes, ncalls = {}, 0, 0
  local cands = val(doc.candidates)
  if type(cands) == "table" then
    for i, cand in ipairs(cands) do
      local content = val(cand.content)
      local text, calls, b
      text, calls, b, ncalls = read_parts(type(content) == "table" and val(content.parts), ncalls)
      bytes = bytes + b
      local message = { role = "assistant", content = text or null }
      if #calls > 0 then message.tool_calls = calls end
      choices[#choices + 1] = {
        index = val(cand.index) or (i - 1), message = message, logprobs = null,
        finish_reason = finish_of(cand.finishReason, #calls > 0) or "stop",
      }
    end
  end
  if #choices == 0 then -- the prompt itself was blocked (promptFeedback.blockReason)
    choices[1] = { index = 0, message = { role = "assistant", content = null },
                   logprobs = null, finish_reason = "content_filter" }
  end
  local out = {
    id = "chatcmpl-" .. tostring(val(doc.responseId) or "gemini"),
    object = "chat.completion", created = target.now or 0,
    model = target.public_model or val(doc.modelVersion) or target.model,
    choices = choices,
  }
  local um = val(doc.usageMetadata)
  local usage
  if type(um) == "table" then
    out.usage, usage = openai_usage(um)
  else
    usage = common.usage(target.prompt_tokens_estimate or 0, common.estimate(bytes), "estimated")
    out.usage = { prompt_tokens = usage.prompt_tokens, completion_tokens = usage.completion_tokens,
                  total_tokens = usage.total_tokens }
  end
  return out, usage
end

local STATUS_TYPE = {
  INVALID_ARGUMENT = "invalid_request_error", FAILED_PRECONDITION = "invalid_request_error",
  OUT_OF_RANGE = "invalid_request_error", UNAUTHENTICATED = "authentication_error",
  PERMISSION_DENIED = "permission_error", NOT_FOUND = "not_found_error",
  RESOURCE_EXHAUSTED = "rate_limit_error", INTERNAL = "api_error", UNAVAILABLE = "api_error",
  DEADLINE_EXCEEDED = "api_error",
}

local function error_of(e, status)
  local msg = val(e.message)
  if type(msg) ~= "string" then return common.opaque_error(NAME, status) end
  local gstatus = val(e.status)
  local code = type(gstatus) == "string" and gstatus or nil
  return common.error_table(msg, STATUS_TYPE[code] or common.type_for_status(status), code)
end

function P.error_response(status, body)
  local doc = common.decode(body)
  if type(doc) == "table" and doc.error == nil and type(doc[1]) == "table" then doc = doc[1] end
  local e = type(doc) == "table" and val(doc.error)
  if type(e) ~= "table" then return common.opaque_error(NAME, status) end
  return error_of(e, status)
end

-- ---- streaming ----------------------------------------------------------------------

function P.stream_start(target, request)
  local moderation_target = target -- where stream_event leaves safety results
  target, request = target or EMPTY, request or EMPTY
  local strip = request.strip_usage_chunk
  if strip == nil then strip = target.strip_usage_chunk end
  return {
    public_model = target.public_model, model = target.public_model or target.model,
    created = target.now or 0, strip = strip ~= false,
    prompt_est = request.prompt_tokens_estimate or target.prompt_tokens_estimate or 0,
    id = nil, started = false, ncalls = 0, finish = nil, usage = nil, openai_usage = nil,
    bytes = 0, done = false, target = moderation_target,
  }
end

local function chunk(st, delta, finish)
  return {
    id = st.id, object = "chat.completion.chunk", created = st.created, model = st.model,
    choices = { { index = 0, delta = delta, logprobs = null, finish_reason = finish or null } },
  }
end

function P.stream_event(st, ev)
  if st.done then return EMPTY end
  local doc = json.decode(ev.data)
  if type(doc) ~= "table" then return EMPTY, nil, "unreadable stream event from gemini" end
  if type(val(doc.error)) == "table" then
    st.done, st.errored = true, true
    return { error_of(doc.error, 500) }
  end
  read_moderation(doc, st.target)
  local out = {}
  if not st.started then
    st.started = true
    st.id = "chatcmpl-" .. tostring(val(doc.responseId) or "gemini")
    if not st.public_model and type(val(doc.modelVersion)) == "string" then st.model = doc.modelVersion end
    out[1] = chunk(st, { role = "assistant", content = "" })
  end
  local cands = val(doc.candidates)
  local cand = type(cands) == "table" and cands[1]
  if type(cand) == "table" then
    local content = val(cand.content)
    local first = st.ncalls
    local text, calls, bytes
    text, calls, bytes, st.ncalls = read_parts(type(content) == "table" and val(content.parts), st.ncalls)
    st.bytes = st.bytes + bytes
    if text then out[#out + 1] = chunk(st, { content = text }) end
    if #calls > 0 then
      for i, c in ipairs(calls) do c.index = first + i - 1 end
      out[#out + 1] = chunk(st, { tool_calls = calls })
    end
    local f = finish_of(cand.finishReason, st.ncalls > 0)
    if f then
      st.finish = f
      out[#out + 1] = chunk(st, {}, f)
    end
  elseif type(val(doc.promptFeedback)) == "table" and val(doc.promptFeedback.blockReason) then
    st.finish = "content_filter"
    out[#out + 1] = chunk(st, {}, "content_filter")
  end
  local usage
  local um = val(doc.usageMetadata)
  if type(um) == "table" then
    st.openai_usage, usage = openai_usage(um)
    st.usage = usage
  end
  return out, usage
end

function P.stream_end(st)
  local usage = st.usage or common.usage(st.prompt_est, common.estimate(st.bytes), "estimated")
  if st.done then return EMPTY, usage end
  st.done = true
  if not st.finish then
    st.errored = true
    return { common.error_table("the gemini backend ended the stream before a finishReason",
      "api_error", "upstream_truncated") }, usage
  end
  if not st.strip then
    local c = chunk(st, {})
    c.choices = json.empty_array()
    c.usage = st.openai_usage or { prompt_tokens = usage.prompt_tokens,
      completion_tokens = usage.completion_tokens, total_tokens = usage.total_tokens }
    return { c, "[DONE]" }, usage
  end
  return { "[DONE]" }, usage
end

-- ---- embeddings -----------------------------------------------------------------------

function P.embeddings_request(req, target)
  if type(req) ~= "table" then return invalid("the request body must be a JSON object") end
  local input = val(req.input)
  if type(input) == "string" then input = { input } end
  if type(input) ~= "table" or #input == 0 then return invalid("input must be a string or a list of strings") end
  local fmt = val(req.encoding_format)
  if fmt ~= nil and fmt ~= "float" and fmt ~= "base64" then
    return unsupported("encoding_format '" .. tostring(fmt) .. "'")
  end
  -- Gemini answers floats; OpenAI clients (the SDK by default) may want
  -- base64: remember, and encode the answer the way OpenAI would.
  target.encoding_format = fmt
  local model = "models/" .. model_name(target.model)
  local dims = val(req.dimensions)
  local requests, bytes = {}, 0
  for i, s in ipairs(input) do
    if type(s) ~= "string" then return unsupported("token-array embeddings input") end
    bytes = bytes + #s
    requests[i] = { model = model, content = { parts = { { text = s } } }, outputDimensionality = dims }
  end
  return {
    method = "POST",
    path = common.root(target, "/v1beta") .. "/" .. model .. ":batchEmbedContents",
    headers = common.headers("x-goog-api-key", target.credential),
    body = { requests = requests },
    stream = false,
    prompt_tokens_estimate = common.estimate(bytes),
  }
end

function P.embeddings_response(status, body, target)
  target = target or EMPTY
  local doc = common.decode(body)
  local embs = type(doc) == "table" and val(doc.embeddings)
  if type(embs) ~= "table" then
    return nil, { status = 502, code = "upstream_invalid_response",
                  message = "the gemini backend sent an embeddings response without embeddings" }
  end
  local data = {}
  for i, e in ipairs(embs) do
    local values = val(e.values)
    local emb = target.encoding_format == "base64" and common.base64_floats(values)
      or common.array(values)
    data[i] = { object = "embedding", index = i - 1, embedding = emb }
  end
  local p = target.prompt_tokens_estimate or 0
  return {
    object = "list", data = common.array(data),
    model = target.public_model or target.model,
    usage = { prompt_tokens = p, total_tokens = p },
  }, common.usage(p, 0, "estimated")
end

return P
