-- prompt-guard.lua — prompts that policy forbids never leave the gateway.
--
-- Rules are regular expressions (sluice.re, PCRE2) over the text of the
-- messages whose role is listed in `roles` (user and system by default;
-- "developer" counts as system, Anthropic's top-level `system` too, and
-- embeddings `input` as user). Each rule has a name, a reason and an
-- action:
--   deny   the request is refused: 400 prompt_blocked, the message names the
--          rule and its reason — never the text that matched;
--   flag   the request goes on; a "flag" decision records the rule;
--   allow  an exemption: text an allow rule matches is taken out before the
--          deny and flag rules look (so "password reset" can be allowed
--          while "password" is denied). Allow rules never deny anything.
-- Deny and flag rules run in the order listed; the first deny ends the
-- check, every flag that matched is recorded once.
local guard = { name = "prompt-guard", priority = 780 }

guard.schema = {
  rules = { type = "array", required = true, elements = { type = "record", fields = {
    name = { type = "string", required = true },
    pattern = { type = "regex", required = true },
    action = { type = "string", one_of = { "deny", "flag", "allow" }, default = "deny" },
    reason = { type = "string" },
    ignore_case = { type = "boolean", default = true },
    roles = { type = "array", elements = { type = "string", one_of = { "user", "system", "assistant", "tool" } } },
  } } },
  roles = { type = "array", elements = { type = "string", one_of = { "user", "system", "assistant", "tool" } },
            default = { "user", "system" } },
  code = { type = "string", default = "prompt_blocked" },
}

local function role_set(list)
  local set = {}
  for _, r in ipairs(list) do set[r] = true end
  return set
end

function guard.init(conf)
  conf.allow, conf.checks = {}, {}
  local seen = {}
  for i, r in ipairs(conf.rules) do
    if seen[r.name] then error("rules[" .. i .. "]: the rule name '" .. r.name .. "' is used twice", 0) end
    seen[r.name] = true
    if r.action ~= "allow" and not r.reason then
      error("rules[" .. i .. "] (" .. r.name .. "): a deny or flag rule needs a reason", 0)
    end
    local rule = { name = r.name, pattern = r.pattern, action = r.action,
                   flags = r.ignore_case and "iu" or "u", -- UTF-8 text: \b, case beyond ASCII
                   roles = role_set(r.roles or conf.roles) }
    if r.action == "deny" then
      rule.message = ("the prompt was blocked by policy rule '%s': %s"):format(r.name, r.reason)
    elseif r.action == "flag" then
      rule.note = ("prompt matched rule '%s': %s"):format(r.name, r.reason)
    end
    local list = r.action == "allow" and conf.allow or conf.checks
    list[#list + 1] = rule
  end
  conf.any_role = {}
  for _, rule in ipairs(conf.checks) do
    for role in pairs(rule.roles) do conf.any_role[role] = true end
  end
end

-- ---- the text to check -----------------------------------------------------------

-- OpenAI's legacy "function" role is a tool result.
local ROLE = { user = "user", system = "system", developer = "system",
               assistant = "assistant", tool = "tool", ["function"] = "tool" }

local text_of

-- An Anthropic document block as the model reads it: title, context and a
-- text source (source.data, or content blocks).
local function document_text(p, out)
  if type(p.title) == "string" then out[#out + 1] = p.title end
  if type(p.context) == "string" then out[#out + 1] = p.context end
  local src = p.source
  if type(src) == "table" then
    if src.type == "text" and type(src.data) == "string" then
      out[#out + 1] = src.data
    elseif src.type == "content" then
      text_of(src.content, out)
    end
  end
end

-- Text parts of a content value into `out`; the content of Anthropic
-- tool_result blocks into `tools` (it is the tool's text, not the user's).
function text_of(c, out, tools)
  if type(c) == "string" then
    out[#out + 1] = c
  elseif type(c) == "table" then
    for _, p in ipairs(c) do
      if type(p) == "string" then
        out[#out + 1] = p
      elseif type(p) == "table" then
        if type(p.text) == "string" then out[#out + 1] = p.text end
        if p.type == "tool_result" and tools then text_of(p.content, tools) end
        if p.type == "document" then document_text(p, out) end
      end
    end
  end
  return out
end

-- { { role =, text = }, … } from an OpenAI or Anthropic chat body or an
-- embeddings body, for the roles some rule looks at. A message's author
-- `name` is read with its text: the model reads it too.
local function pieces(body, wanted)
  local out = {}
  local function add(role, content, name)
    local parts, tools = {}, {}
    if type(name) == "string" and name ~= "" then parts[1] = name end
    text_of(content, parts, tools)
    if #parts > 0 and wanted[role] then out[#out + 1] = { role = role, text = table.concat(parts, "\n") } end
    if #tools > 0 and wanted.tool then
      out[#out + 1] = { role = "tool", text = table.concat(tools, "\n") }
    end
  end
  add("system", body.system)
  add("user", body.input)
  if type(body.messages) == "table" then
    for _, m in ipairs(body.messages) do
      if type(m) == "table" and ROLE[m.role] then add(ROLE[m.role], m.content, m.name) end
    end
  end
  return out
end

-- ---- the phase ----------------------------------------------------------------------

function guard.access(ctx, conf)
  if #conf.checks == 0 then return end
  local body = ctx.request:json()
  if type(body) ~= "table" then return end
  local flagged, names = {}, {}
  for _, piece in ipairs(pieces(body, conf.any_role)) do
    local text = piece.text
    for _, a in ipairs(conf.allow) do
      if a.roles[piece.role] then
        text = sluice.re.gsub(text, a.pattern, " ", a.flags)
      end
    end
    for _, rule in ipairs(conf.checks) do
      if rule.roles[piece.role] and not flagged[rule.name]
        and sluice.re.find(text, rule.pattern, rule.flags) then
        if rule.action == "deny" then
          ctx:annotate("prompt_rule", rule.name)
          return ctx:deny(400, conf.code, rule.message)
        end
        flagged[rule.name] = true
        names[#names + 1] = rule.name
        ctx:decision("flag", rule.note .. " (" .. piece.role .. " message)")
      end
    end
  end
  if #names > 0 then ctx:annotate("prompt_flags", names) end
end

return guard
