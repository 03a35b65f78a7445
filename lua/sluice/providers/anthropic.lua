-- anthropic.lua — the Anthropic Messages API behind the OpenAI front door.
-- Requests: system/developer messages become `system`, tool calls become
-- tool_use blocks and tool messages tool_result blocks (consecutive turns of
-- one role are merged, as Anthropic wants alternating roles), images become
-- base64 or url sources, max_tokens is required (target.max_tokens or 4096).
-- What Anthropic cannot do (n > 1, JSON mode, logprobs, temperature above 1,
-- penalties…) is refused by name rather than dropped. Responses and streams
-- come back as OpenAI chat completions and chunks.
local json = require "sluice.json"
local common = require "sluice.providers.common"

local P = { name = "anthropic", family = "anthropic" }

local type, pairs, ipairs, tostring, next = type, pairs, ipairs, tostring, next
local concat = table.concat
local val, null = common.val, json.null
local NAME = "anthropic"
local API_VERSION = "2023-06-01"
local DEFAULT_MAX_TOKENS = 4096
local EMPTY = {}

local function unsupported(feature) return nil, common.unsupported(NAME, feature) end
local function invalid(msg) return nil, common.invalid(msg) end

-- ---- request ----------------------------------------------------------------

-- Fields of an OpenAI chat request this adapter understands; `true` means
-- dropped as harmless.
local KNOWN = {
  model = true, messages = true, max_tokens = true, max_completion_tokens = true,
  temperature = true, top_p = true, stop = true, stream = true, stream_options = true,
  tools = true, tool_choice = true, parallel_tool_calls = true, user = true,
  response_format = true, n = true, frequency_penalty = true, presence_penalty = true,
  logprobs = true, logit_bias = true, seed = true, store = true, metadata = true,
  service_tier = true, modalities = true,
}

-- One OpenAI content part -> one Anthropic block, or nil, err.
local function block_of(part)
  if type(part) ~= "table" then return invalid("a content part must be an object") end
  local t = part.type
  if t == "text" then
    return { type = "text", text = part.text }
  elseif t == "image_url" then
    local iu = val(part.image_url)
    local url = type(iu) == "table" and iu.url or iu
    if type(url) ~= "string" then return invalid("image_url.url must be a string") end
    local mime, data = common.data_url(url)
    if mime then
      return { type = "image", source = { type = "base64", media_type = mime, data = data } }
    end
    if url:match("^https?://") then
      return { type = "image", source = { type = "url", url = url } }
    end
    return unsupported("image_url with a URL that is neither data: nor http(s)")
  end
  return unsupported("content part type '" .. tostring(t) .. "'")
end

-- OpenAI content (string or parts) -> list of blocks.
local function blocks_of(content, into)
  content = val(content)
  into = into or {}
  if content == nil then return into end
  if type(content) == "string" then
    if content ~= "" then into[#into + 1] = { type = "text", text = content } end
    return into
  end
  if type(content) ~= "table" then return invalid("message content must be a string or a list of parts") end
  for _, part in ipairs(content) do
    local b, err = block_of(part)
    if not b then return nil, err end
    into[#into + 1] = b
  end
  return into
end

local function system_text(content)
  content = val(content)
  if type(content) == "string" then return content end
  if type(content) ~= "table" then return nil end
  local out = {}
  for _, p in ipairs(content) do
    if type(p) ~= "table" or p.type ~= "text" then return nil end
    out[#out + 1] = p.text
  end
  return concat(out, "\n")
end

local function tool_use_of(tc)
  local f = type(tc) == "table" and val(tc["function"])
  if type(f) ~= "table" or type(f.name) ~= "string" then
    return invalid("a tool call needs function.name")
  end
  local args = val(f.arguments)
  local input
  if args == nil or args == "" then
    input = {}
  else
    input = json.decode(args)
    if type(input) ~= "table" then
      return invalid("tool call '" .. f.name .. "' has arguments that are not a JSON object")
    end
  end
  return { type = "tool_use", id = tc.id, name = f.name, input = input }
end

local function tool_result_of(m)
  local content = val(m.content)
  local out
  if type(content) == "string" or content == nil then
    out = content or ""
  else
    local blocks, err = blocks_of(content)
    if not blocks then return nil, err end
    out = common.array(blocks)
  end
  return { type = "tool_result", tool_use_id = m.tool_call_id, content = out }
end

-- messages -> Anthropic messages, system (string|nil); or nil, err.
local function convert_messages(msgs)
  if type(msgs) ~= "table" or #msgs == 0 then
    return invalid("messages must be a non-empty list")
  end
  local system, out = {}, {}
  local last -- the Anthropic message being filled
  local function push(role, blocks)
    if #blocks == 0 then return end
    if last and last.role == role then
      local c = last.content
      for i = 1, #blocks do c[#c + 1] = blocks[i] end
    else
      last = { role = role, content = blocks }
      out[#out + 1] = last
    end
  end
  for _, m in ipairs(msgs) do
    if type(m) ~= "table" then return invalid("each message must be an object") end
    local role = m.role
    if role == "system" or role == "developer" then
      local s = system_text(m.content)
      if not s then return unsupported("non-text content in a " .. role .. " message") end
      system[#system + 1] = s
    elseif role == "user" then
      local blocks, err = blocks_of(m.content)
      if not blocks then return nil, err end
      push("user", blocks)
    elseif role == "assistant" then
      local blocks, err = blocks_of(m.content)
      if not blocks then return nil, err end
      local calls = val(m.tool_calls)
      if type(calls) == "table" then
        for _, tc in ipairs(calls) do
          local b, terr = tool_use_of(tc)
          if not b then return nil, terr end
          blocks[#blocks + 1] = b
        end
      end
      if val(m.function_call) ~= nil then return unsupported("function_call (legacy functions)") end
      push("assistant", blocks)
    elseif role == "tool" then
      if type(m.tool_call_id) ~= "string" then return invalid("a tool message needs tool_call_id") end
      local b, err = tool_result_of(m)
      if not b then return nil, err end
      push("user", { b })
    else
      return unsupported("message role '" .. tostring(role) .. "'")
    end
  end
  if #out == 0 then return invalid("messages must hold at least one user or assistant message") end
  return out, #system > 0 and concat(system, "\n\n") or nil
end

local function convert_tools(tools)
  local out = {}
  for _, t in ipairs(tools) do
    if type(t) ~= "table" or t.type ~= "function" then
      return unsupported("tool type '" .. tostring(type(t) == "table" and t.type or t) .. "'")
    end
    local f = val(t["function"])
    if type(f) ~= "table" or type(f.name) ~= "string" then return invalid("a tool needs function.name") end
    local schema = val(f.parameters)
    if type(schema) ~= "table" then schema = { type = "object", properties = {} } end
    out[#out + 1] = { name = f.name, description = val(f.description), input_schema = schema }
  end
  return out
end

local function convert_tool_choice(tc, parallel)
  tc = val(tc)
  local out
  if tc == nil or tc == "auto" then
    out = { type = "auto" }
  elseif tc == "none" then
    out = { type = "none" }
  elseif tc == "required" then
    out = { type = "any" }
  elseif type(tc) == "table" and tc.type == "function" and type(val(tc["function"])) == "table" then
    out = { type = "tool", name = tc["function"].name }
  else
    return invalid("tool_choice must be auto, none, required or a function")
  end
  if parallel == false and out.type ~= "none" then out.disable_parallel_tool_use = true end
  return out
end

function P.chat_request(req, target)
  if type(req) ~= "table" then return invalid("the request body must be a JSON object") end
  local bad = common.unknown_keys(req, KNOWN)
  if bad then return unsupported("the field(s) " .. bad) end
  for k, default in pairs(common.DEFAULT_ONLY) do
    local v = val(req[k])
    if v ~= nil and v ~= default then
      if k == "n" then return unsupported("n > 1") end
      if k ~= "parallel_tool_calls" then return unsupported(k) end
    end
  end
  local rf = val(req.response_format)
  if type(rf) == "table" and rf.type ~= "text" then
    return unsupported("response_format " .. tostring(rf.type) .. " (JSON mode)")
  end
  local lb = val(req.logit_bias)
  if type(lb) == "table" and next(lb) ~= nil then return unsupported("logit_bias") end
  local mods = val(req.modalities)
  if type(mods) == "table" then
    for _, m in ipairs(mods) do
      if m ~= "text" then return unsupported("modality '" .. tostring(m) .. "'") end
    end
  end
  local temp = val(req.temperature)
  if type(temp) == "number" and temp > 1 then return unsupported("temperature above 1") end

  local messages, system = convert_messages(val(req.messages))
  if not messages then return nil, system end

  local body = {
    model = target.model,
    messages = messages,
    system = system,
    max_tokens = val(req.max_completion_tokens) or val(req.max_tokens)
      or target.max_tokens or DEFAULT_MAX_TOKENS,
    temperature = temp,
    top_p = val(req.top_p),
  }
  local stop = val(req.stop)
  if type(stop) == "string" then
    body.stop_sequences = { stop }
  elseif type(stop) == "table" and #stop > 0 then
    body.stop_sequences = stop
  end
  local tools = val(req.tools)
  if type(tools) == "table" and #tools > 0 then
    local t, err = convert_tools(tools)
    if not t then return nil, err end
    body.tools = t
    local tc, terr = convert_tool_choice(req.tool_choice, val(req.parallel_tool_calls))
    if not tc then return nil, terr end
    body.tool_choice = tc
  end
  local user = val(req.user)
  if type(user) == "string" and user ~= "" then body.metadata = { user_id = user } end
  local stream = req.stream == true
  if stream then body.stream = true end
  local so = val(req.stream_options)
  local headers = common.headers("x-api-key", target.credential)
  headers["anthropic-version"] = target.api_version or API_VERSION
  return {
    method = "POST",
    path = common.root(target, "/v1") .. "/messages",
    headers = headers,
    body = body,
    stream = stream,
    strip_usage_chunk = not (type(so) == "table" and so.include_usage == true),
    prompt_tokens_estimate = common.estimate(common.request_bytes(req)),
  }
end

-- ---- response -----------------------------------------------------------------

local FINISH = {
  end_turn = "stop", stop_sequence = "stop", pause_turn = "stop",
  max_tokens = "length", model_context_window_exceeded = "length",
  tool_use = "tool_calls", refusal = "content_filter",
}
P.FINISH = FINISH

local function num(x) return type(x) == "number" and x or 0 end

-- Anthropic usage -> prompt, completion, cached (prompt counts cache reads
-- and writes, as OpenAI's prompt_tokens does).
local function tokens(u)
  local cached = num(val(u.cache_read_input_tokens))
  return num(val(u.input_tokens)) + num(val(u.cache_creation_input_tokens)) + cached,
         num(val(u.output_tokens)), cached
end

-- Anthropic has no per-category safety scores; a refusal (stop_reason
-- "refusal": the model's safety classifiers stopped it) is recorded in
-- target.moderation as a block (see common.lua).
local function refusal(stop, target)
  if stop == "refusal" and target then
    local m = common.moderation(target, NAME)
    common.moderation_block(m, m, "refusal")
  end
end

function P.chat_response(status, body, target)
  local moderation_target = target
  target = target or EMPTY
  local doc = common.decode(body)
  if type(doc) ~= "table" or type(val(doc.content)) ~= "table" then
    return nil, { status = 502, code = "upstream_invalid_response",
                  message = "the anthropic backend sent a response that is not a message" }
  end
  local text, calls, bytes = {}, {}, 0
  for _, b in ipairs(doc.content) do
    if b.type == "text" then
      text[#text + 1] = b.text
      bytes = bytes + #b.text
    elseif b.type == "tool_use" then
      local args = json.encode(val(b.input) or {}) or "{}"
      bytes = bytes + #args
      calls[#calls + 1] = { id = b.id, type = "function",
                            ["function"] = { name = b.name, arguments = args } }
    end -- thinking and server-tool blocks have no OpenAI counterpart
  end
  local message = { role = "assistant", content = #text > 0 and concat(text) or null }
  if #calls > 0 then message.tool_calls = calls end
  local stop = val(doc.stop_reason)
  refusal(stop, moderation_target)
  local out = {
    id = doc.id, object = "chat.completion", created = target.now or 0,
    model = target.public_model or doc.model,
    choices = { { index = 0, message = message, logprobs = null,
                  finish_reason = FINISH[stop] or (stop and "stop") or null } },
  }
  local u = val(doc.usage)
  local usage
  if type(u) == "table" then
    local p, c, cached = tokens(u)
    usage = common.usage(p, c, "reported")
    out.usage = { prompt_tokens = p, completion_tokens = c, total_tokens = p + c,
                  prompt_tokens_details = { cached_tokens = cached } }
  else
    usage = common.usage(target.prompt_tokens_estimate or 0, common.estimate(bytes), "estimated")
    out.usage = { prompt_tokens = usage.prompt_tokens, completion_tokens = usage.completion_tokens,
                  total_tokens = usage.total_tokens }
  end
  return out, usage
end

-- Anthropic error type -> OpenAI error type.
local ERROR_TYPE = {
  invalid_request_error = "invalid_request_error", authentication_error = "authentication_error",
  permission_error = "permission_error", not_found_error = "not_found_error",
  request_too_large = "invalid_request_error", rate_limit_error = "rate_limit_error",
  api_error = "api_error", overloaded_error = "api_error",
}

local function error_of(e, status)
  local etype = val(e.type)
  local msg = val(e.message)
  if type(msg) ~= "string" then return common.opaque_error(NAME, status) end
  return common.error_table(msg, ERROR_TYPE[etype] or common.type_for_status(status),
    type(etype) == "string" and etype or nil)
end

function P.error_response(status, body)
  local doc = common.decode(body)
  local e = type(doc) == "table" and val(doc.error)
  if type(e) ~= "table" then return common.opaque_error(NAME, status) end
  return error_of(e, status)
end

-- ---- streaming --------------------------------------------------------------------

function P.stream_start(target, request)
  local moderation_target = target -- where a refusal is recorded
  target, request = target or EMPTY, request or EMPTY
  local strip = request.strip_usage_chunk
  if strip == nil then strip = target.strip_usage_chunk end
  return {
    public_model = target.public_model, created = target.now or 0,
    strip = strip ~= false, -- emit the usage chunk only when the client asked
    prompt_est = request.prompt_tokens_estimate or target.prompt_tokens_estimate or 0,
    id = nil, model = nil, tools = {}, ntools = 0, finish = nil,
    prompt = nil, completion = nil, bytes = 0, done = false, target = moderation_target,
  }
end

local function chunk(st, delta, finish)
  return {
    id = st.id, object = "chat.completion.chunk", created = st.created, model = st.model,
    choices = { { index = 0, delta = delta, logprobs = null, finish_reason = finish or null } },
  }
end

local function current_usage(st)
  if st.prompt == nil and st.completion == nil then return nil end
  local u = common.usage(st.prompt, st.completion, "reported")
  st.usage = u
  return u
end

local HANDLERS = {}

function HANDLERS.message_start(st, d)
  local m = type(d.message) == "table" and d.message or EMPTY
  st.id = m.id
  st.model = st.public_model or m.model
  local u = val(m.usage)
  if type(u) == "table" then
    st.prompt, st.completion = tokens(u)
  end
  return { chunk(st, { role = "assistant", content = "" }) }, current_usage(st)
end

function HANDLERS.content_block_start(st, d)
  local b = val(d.content_block)
  if type(b) ~= "table" then return EMPTY end
  if b.type == "tool_use" then
    local i = st.ntools
    st.ntools = i + 1
    st.tools[d.index] = i
    return { chunk(st, { tool_calls = { { index = i, id = b.id, type = "function",
      ["function"] = { name = b.name, arguments = "" } } } }) }
  elseif b.type == "text" and type(b.text) == "string" and b.text ~= "" then
    st.bytes = st.bytes + #b.text
    return { chunk(st, { content = b.text }) }
  end
  return EMPTY
end

function HANDLERS.content_block_delta(st, d)
  local delta = val(d.delta)
  if type(delta) ~= "table" then return EMPTY end
  if delta.type == "text_delta" and type(delta.text) == "string" then
    st.bytes = st.bytes + #delta.text
    return { chunk(st, { content = delta.text }) }
  elseif delta.type == "input_json_delta" then
    local i = st.tools[d.index]
    if i == nil or type(delta.partial_json) ~= "string" or delta.partial_json == "" then return EMPTY end
    st.bytes = st.bytes + #delta.partial_json
    return { chunk(st, { tool_calls = { { index = i, ["function"] = { arguments = delta.partial_json } } } }) }
  end
  return EMPTY -- thinking, signature, citations: no OpenAI counterpart
end

function HANDLERS.message_delta(st, d)
  local delta = val(d.delta)
  local u = val(d.usage)
  if type(u) == "table" then
    if val(u.output_tokens) ~= nil then st.completion = num(val(u.output_tokens)) end
    if val(u.input_tokens) ~= nil then st.prompt = tokens(u) end
  end
  local out = EMPTY
  local reason = type(delta) == "table" and val(delta.stop_reason)
  if reason then
    refusal(reason, st.target)
    st.finish = FINISH[reason] or "stop"
    out = { chunk(st, {}, st.finish) }
  end
  return out, current_usage(st)
end

function HANDLERS.message_stop(st)
  if st.done then return EMPTY end
  st.done = true
  local u = current_usage(st)
  if not st.strip and u then
    local c = chunk(st, {})
    c.choices = json.empty_array()
    c.usage = { prompt_tokens = u.prompt_tokens, completion_tokens = u.completion_tokens,
                total_tokens = u.total_tokens }
    return { c, "[DONE]" }, u
  end
  return { "[DONE]" }, u
end

function HANDLERS.error(st, d)
  st.done, st.errored = true, true
  local e = val(d.error)
  if type(e) ~= "table" then return { common.opaque_error(NAME, 500) } end
  return { error_of(e, 500) }
end

function HANDLERS.ping() return EMPTY end

function P.stream_event(st, ev)
  if st.done then return EMPTY end
  local d = json.decode(ev.data)
  if type(d) ~= "table" then return EMPTY, nil, "unreadable stream event from anthropic" end
  local h = HANDLERS[ev.event or d.type] or HANDLERS[d.type]
  if not h then return EMPTY end -- new event types may appear; ignore them
  return h(st, d)
end

function P.stream_end(st)
  local usage = st.usage or common.usage(st.prompt_est, common.estimate(st.bytes), "estimated")
  if st.done then return EMPTY, usage end
  st.done, st.errored = true, true
  return { common.error_table("the anthropic backend ended the stream before message_stop",
    "api_error", "upstream_truncated") }, usage
end

-- ---- embeddings -------------------------------------------------------------------

function P.embeddings_request()
  return unsupported("embeddings")
end

function P.embeddings_response()
  return unsupported("embeddings")
end

return P
