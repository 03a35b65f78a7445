-- deny-field.lua — refuse requests that carry a forbidden value in one field
-- of their JSON body: a retired model, a test account in production, an
-- environment that must not reach a provider.
-- The field is a dotted path ("model", "user", "metadata.env"); the values
-- are an exact list, a regular expression (sluice.re, PCRE2), or both.
-- A refusal is a 403 with a stable code and a message that names the field
-- and the rule, never the value: the value may be a user id or a secret.
-- Requests without a JSON body, or without the field, pass.
local deny_field = { name = "deny-field", priority = 900 }

deny_field.schema = {
  field = { type = "string", required = true },
  values = { type = "array", elements = { type = "string" }, default = {} },
  pattern = { type = "regex" },
  ignore_case = { type = "boolean", default = false },
  code = { type = "string", default = "field_value_denied" },
  reason = { type = "string" },
}

function deny_field.init(conf)
  if #conf.values == 0 and not conf.pattern then
    error("deny-field needs 'values', 'pattern' or both", 0)
  end
  conf.path = {}
  for part in conf.field:gmatch("[^.]+") do conf.path[#conf.path + 1] = part end
  if #conf.path == 0 then error("deny-field: 'field' names no field", 0) end
  conf.forbidden = {}
  for _, v in ipairs(conf.values) do
    conf.forbidden[conf.ignore_case and v:lower() or v] = true
  end
  conf.flags = conf.ignore_case and "i" or nil
  conf.message = ("the value of '%s' is not allowed by policy%s"):format(
    conf.field, conf.reason and (": " .. conf.reason) or "")
end

-- The field's value as a string, or nil when the body has no such field.
local function field_value(body, path)
  local v = body
  for i = 1, #path do
    if type(v) ~= "table" then return nil end
    v = v[path[i]]
  end
  if type(v) == "string" then return v end
  if type(v) == "number" or type(v) == "boolean" then return tostring(v) end
  return nil
end

local function forbidden(conf, s)
  if conf.forbidden[conf.ignore_case and s:lower() or s] then return true end
  return conf.pattern ~= nil and sluice.re.find(s, conf.pattern, conf.flags) ~= nil
end

function deny_field.access(ctx, conf)
  local body = ctx.request:json()
  if type(body) ~= "table" then return end
  local s = field_value(body, conf.path)
  if s and forbidden(conf, s) then
    ctx:annotate("denied_field", conf.field)
    return ctx:deny(403, conf.code, conf.message)
  end
end

return deny_field
