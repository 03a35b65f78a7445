-- front/anthropic.lua — the second front door: POST /v1/messages (Anthropic
-- Messages) in front of the same pipeline as /v1/chat/completions. A
-- Messages request becomes the internal (OpenAI chat) request, so policy and
-- provider adapters see one shape; the answer, streamed or not, goes back as
-- a Messages response with the event sequence the Anthropic SDKs expect.
-- Features the internal form cannot carry (top_k, thinking, server tools,
-- documents) are refused by name.
local json = require "sluice.json"

local F = {}

local type, pairs, ipairs, tostring, next = type, pairs, ipairs, tostring, next
local concat = table.concat
local null = json.null
local EMPTY = {}

local function val(x)
  if x == null then return nil end
  return x
end

local function unsupported(feature)
  return nil, { status = 400, code = "unsupported_feature",
                message = feature .. " is not supported by sluice's Anthropic Messages front door" }
end

local function invalid(message)
  return nil, { status = 400, code = "invalid_request", message = message }
end

-- ---- request: Messages -> internal -------------------------------------------------

local KNOWN = {
  model = true, messages = true, system = true, max_tokens = true, temperature = true,
  top_p = true, top_k = true, stop_sequences = true, stream = true, tools = true,
  tool_choice = true, metadata = true, service_tier = true, thinking = true,
}

local function text_of_blocks(content, what)
  content = val(content)
  if content == nil then return "" end
  if type(content) == "string" then return content end
  if type(content) ~= "table" then return invalid(what .. " must be a string or a list of blocks") end
  local out = {}
  for _, b in ipairs(content) do
    if type(b) ~= "table" or b.type ~= "text" then
      return unsupported("a " .. tostring(type(b) == "table" and b.type or b) .. " block in " .. what)
    end
    out[#out + 1] = b.text
  end
  return concat(out, "\n")
end

local function image_part(b)
  local src = val(b.source)
  if type(src) ~= "table" then return invalid("an image block needs a source") end
  if src.type == "base64" then
    return { type = "image_url", image_url = { url = "data:" .. tostring(src.media_type) .. ";base64," .. tostring(src.data) } }
  elseif src.type == "url" then
    return { type = "image_url", image_url = { url = src.url } }
  end
  return unsupported("image source type '" .. tostring(src.type) .. "'")
end

-- One Anthropic user message -> internal messages appended to `out`: tool
-- results first (as tool messages), then the rest as one user message.
local function user_message(m, out)
  local content = val(m.content)
  if type(content) == "string" then
    out[#out + 1] = { role = "user", content = content }
    return true
  end
  if type(content) ~= "table" then return invalid("message content must be a string or a list of blocks") end
  local parts = {}
  for _, b in ipairs(content) do
    local t = type(b) == "table" and b.type
    if t == "text" then
      parts[#parts + 1] = { type = "text", text = b.text }
    elseif t == "image" then
      local p, err = image_part(b)
      if not p then return nil, err end
      parts[#parts + 1] = p
    elseif t == "tool_result" then
      local text, err = text_of_blocks(b.content, "a tool_result")
      if not text then return nil, err end
      out[#out + 1] = { role = "tool", tool_call_id = b.tool_use_id, content = text }
    else
      return unsupported("a " .. tostring(t) .. " content block")
    end
  end
  if #parts == 1 and parts[1].type == "text" then
    out[#out + 1] = { role = "user", content = parts[1].text }
  elseif #parts > 0 then
    out[#out + 1] = { role = "user", content = parts }
  end
  return true
end

local function assistant_message(m, out)
  local content = val(m.content)
  if type(content) == "string" then
    out[#out + 1] = { role = "assistant", content = content }
    return true
  end
  if type(content) ~= "table" then return invalid("message content must be a string or a list of blocks") end
  local text, calls = {}, {}
  for _, b in ipairs(content) do
    local t = type(b) == "table" and b.type
    if t == "text" then
      text[#text + 1] = b.text
    elseif t == "tool_use" then
      local args = json.encode(val(b.input) or {})
      calls[#calls + 1] = { id = b.id, type = "function", ["function"] = { name = b.name, arguments = args or "{}" } }
    elseif t == "thinking" or t == "redacted_thinking" then -- the internal form has no place for them
    else
      return unsupported("a " .. tostring(t) .. " content block")
    end
  end
  local msg = { role = "assistant", content = #text > 0 and concat(text) or null }
  if #calls > 0 then msg.tool_calls = calls end
  out[#out + 1] = msg
  return true
end

local function convert_tools(tools)
  local out = {}
  for _, t in ipairs(tools) do
    if type(t) ~= "table" then return invalid("each tool must be an object") end
    if t.type ~= nil and t.type ~= "custom" then return unsupported("the server tool '" .. tostring(t.type) .. "'") end
    out[#out + 1] = { type = "function", ["function"] = {
      name = t.name, description = val(t.description), parameters = val(t.input_schema) } }
  end
  return out
end

-- Anthropic Messages request -> internal (OpenAI chat) request, or nil, err.
function F.to_internal(req)
  if type(req) ~= "table" then return invalid("the request body must be a JSON object") end
  for k in pairs(req) do
    if not KNOWN[k] then return unsupported("the field '" .. tostring(k) .. "'") end
  end
  if val(req.top_k) ~= nil then return unsupported("top_k") end
  local thinking = val(req.thinking)
  if type(thinking) == "table" and thinking.type ~= "disabled" then return unsupported("extended thinking") end
  local msgs = val(req.messages)
  if type(msgs) ~= "table" or #msgs == 0 then return invalid("messages must be a non-empty list") end

  local out = {}
  local system = val(req.system)
  if system ~= nil then
    local text, err = text_of_blocks(system, "system")
    if not text then return nil, err end
    out[1] = { role = "system", content = text }
  end
  for _, m in ipairs(msgs) do
    if type(m) ~= "table" then return invalid("each message must be an object") end
    local ok, err
    if m.role == "user" then
      ok, err = user_message(m, out)
    elseif m.role == "assistant" then
      ok, err = assistant_message(m, out)
    else
      return invalid("message role must be user or assistant, not '" .. tostring(m.role) .. "'")
    end
    if not ok then return nil, err end
  end

  local r = {
    model = req.model, messages = out, max_tokens = val(req.max_tokens),
    temperature = val(req.temperature), top_p = val(req.top_p),
  }
  local stop = val(req.stop_sequences)
  if type(stop) == "table" and #stop > 0 then r.stop = stop end
  local tools = val(req.tools)
  if type(tools) == "table" and #tools > 0 then
    local t, err = convert_tools(tools)
    if not t then return nil, err end
    r.tools = t
  end
  local tc = val(req.tool_choice)
  if type(tc) == "table" then
    if tc.type == "auto" then r.tool_choice = "auto"
    elseif tc.type == "any" then r.tool_choice = "required"
    elseif tc.type == "none" then r.tool_choice = "none"
    elseif tc.type == "tool" then r.tool_choice = { type = "function", ["function"] = { name = tc.name } }
    else return invalid("tool_choice.type must be auto, any, tool or none") end
    if tc.disable_parallel_tool_use == true then r.parallel_tool_calls = false end
  end
  local md = val(req.metadata)
  if type(md) == "table" and type(val(md.user_id)) == "string" then r.user = md.user_id end
  if req.stream == true then
    r.stream = true
    r.stream_options = { include_usage = true } -- message_delta reports usage
  end
  return r
end

-- ---- response: internal -> Messages ---------------------------------------------------

local STOP = {
  stop = "end_turn", length = "max_tokens", tool_calls = "tool_use",
  function_call = "tool_use", content_filter = "refusal",
}
F.STOP = STOP

local function msg_id(id)
  id = type(id) == "string" and id or "msg_sluice"
  if id:sub(1, 4) == "msg_" then return id end
  return "msg_" .. id
end

local function tokens(usage)
  local p = type(usage) == "table" and val(usage.prompt_tokens)
  local c = type(usage) == "table" and val(usage.completion_tokens)
  return type(p) == "number" and p or 0, type(c) == "number" and c or 0
end

local function input_of(arguments)
  local v = type(arguments) == "string" and arguments ~= "" and json.decode(arguments)
  if type(v) == "table" then return v end
  return {}
end

-- usage: the adapter's usage table (or nil: the body's usage is read).
function F.from_internal(body, usage, public_model)
  local choice = type(body) == "table" and type(val(body.choices)) == "table" and body.choices[1] or EMPTY
  local m = val(choice.message) or EMPTY
  local content = {}
  local text = val(m.content)
  if type(text) == "table" then -- content parts: keep the text
    local t = {}
    for _, p in ipairs(text) do
      if type(p) == "table" and p.type == "text" then t[#t + 1] = p.text end
    end
    text = concat(t)
  end
  if type(text) == "string" and text ~= "" then content[1] = { type = "text", text = text } end
  local calls = val(m.tool_calls)
  if type(calls) == "table" then
    for _, tc in ipairs(calls) do
      local f = val(tc["function"]) or EMPTY
      content[#content + 1] = { type = "tool_use", id = tc.id, name = f.name, input = input_of(val(f.arguments)) }
    end
  end
  local p, c = tokens(usage or val(body and body.usage))
  local finish = val(choice.finish_reason)
  return {
    id = msg_id(body and body.id), type = "message", role = "assistant",
    model = public_model or (body and body.model),
    content = next(content) and content or json.empty_array(),
    stop_reason = STOP[finish] or (finish and "end_turn") or null,
    stop_sequence = null,
    usage = { input_tokens = p, output_tokens = c },
  }
end

-- ---- streaming: internal chunks -> Messages events ---------------------------------------

-- opts (optional): { model = public model, input_tokens = estimate }, or
-- just the public model name.
function F.stream_start(opts)
  if type(opts) == "string" then opts = { model = opts } end
  opts = opts or EMPTY
  return {
    model = opts.model, input_tokens = opts.input_tokens or 0,
    started = false, pinged = false, index = -1, open = nil,
    tools = {}, finish = nil, usage = nil, ended = false,
  }
end

local function ev(out, name, data)
  out[#out + 1] = { event = name, data = data }
end

local function start(st, c, out)
  if st.started then return end
  st.started = true
  ev(out, "message_start", { type = "message_start", message = {
    id = msg_id(type(c) == "table" and c.id), type = "message", role = "assistant",
    model = st.model or (type(c) == "table" and c.model) or null,
    content = json.empty_array(), stop_reason = null, stop_sequence = null,
    usage = { input_tokens = st.input_tokens, output_tokens = 0 },
  } })
end

local function close_block(st, out)
  if st.open then
    ev(out, "content_block_stop", { type = "content_block_stop", index = st.index })
    st.open = nil
  end
end

local function open_block(st, out, kind, block)
  close_block(st, out)
  st.index = st.index + 1
  st.open = kind
  ev(out, "content_block_start", { type = "content_block_start", index = st.index, content_block = block })
  if not st.pinged then
    st.pinged = true
    ev(out, "ping", { type = "ping" })
  end
  return st.index
end

local function finish(st, out)
  start(st, nil, out)
  close_block(st, out)
  local p, c = tokens(st.usage)
  if st.usage == nil then p = st.input_tokens end
  ev(out, "message_delta", { type = "message_delta",
    delta = { stop_reason = STOP[st.finish] or (st.finish and "end_turn") or "end_turn", stop_sequence = null },
    usage = { input_tokens = p, output_tokens = c } })
  ev(out, "message_stop", { type = "message_stop" })
  st.ended = true
  return out
end

-- One internal chunk (a table) or "[DONE]" -> list of { event, data }.
function F.stream_chunk(st, c)
  if st.ended then return EMPTY end
  local out = {}
  if c == "[DONE]" then return finish(st, out) end
  if type(c) ~= "table" then return out end
  if val(c.error) ~= nil then
    st.ended = true
    ev(out, "error", F.error(c)) -- mid-stream: the error's own type decides
    return out
  end
  start(st, c, out)
  local u = val(c.usage)
  if type(u) == "table" then st.usage = u end
  local choices = val(c.choices)
  local choice = type(choices) == "table" and choices[1]
  if type(choice) ~= "table" then return out end
  local d = val(choice.delta) or EMPTY
  local text = val(d.content)
  if type(text) == "string" and text ~= "" then
    if st.open ~= "text" then open_block(st, out, "text", { type = "text", text = "" }) end
    ev(out, "content_block_delta", { type = "content_block_delta", index = st.index,
      delta = { type = "text_delta", text = text } })
  end
  local calls = val(d.tool_calls)
  if type(calls) == "table" then
    for _, tc in ipairs(calls) do
      local i = val(tc.index) or 0
      local f = val(tc["function"]) or EMPTY
      local block = st.tools[i]
      if block == nil then
        block = open_block(st, out, "tool", { type = "tool_use", id = tc.id, name = f.name, input = {} })
        st.tools[i] = block
      end
      local args = val(f.arguments)
      if type(args) == "string" and args ~= "" then
        ev(out, "content_block_delta", { type = "content_block_delta", index = block,
          delta = { type = "input_json_delta", partial_json = args } })
      end
    end
  end
  local fr = val(choice.finish_reason)
  if fr then
    st.finish = fr
    close_block(st, out)
  end
  return out
end

-- The stream is over: usage (the adapter's final usage, optional) fills
-- message_delta if [DONE] has not already closed the message.
function F.stream_end(st, usage)
  if st.ended then return EMPTY end
  if usage then st.usage = usage end
  return finish(st, {})
end

-- ---- errors ---------------------------------------------------------------------------------

local ERROR_TYPE = {
  [400] = "invalid_request_error", [401] = "authentication_error", [403] = "permission_error",
  [404] = "not_found_error", [413] = "request_too_large", [429] = "rate_limit_error",
  [500] = "api_error", [529] = "overloaded_error", [503] = "overloaded_error",
}
local BY_OPENAI_TYPE = {
  invalid_request_error = "invalid_request_error", authentication_error = "authentication_error",
  permission_error = "permission_error", not_found_error = "not_found_error",
  rate_limit_error = "rate_limit_error", insufficient_quota = "rate_limit_error",
}

-- An OpenAI error table ({ error = { message, type, code } }) or an adapter
-- error ({ status, code, message }) -> Anthropic's { type = "error", error }.
function F.error(e, status)
  e = type(e) == "table" and e or EMPTY
  local inner = type(val(e.error)) == "table" and e.error or e
  status = status or e.status
  local etype = ERROR_TYPE[status] or BY_OPENAI_TYPE[val(inner.type)]
  if not etype then
    etype = (type(status) ~= "number" or status >= 500) and "api_error" or "invalid_request_error"
  end
  local msg = val(inner.message)
  return { type = "error", error = { type = etype, message = type(msg) == "string" and msg or "request failed" } }
end

return F
