local p = { name = "deny-model", priority = 20 }
p.schema = { models = { type = "array", elements = { type = "string" }, required = true } }
function p.init(conf) conf.set = {} for _, m in ipairs(conf.models) do conf.set[m] = true end end
function p.access(ctx, conf)
  local body = ctx.request:json()
  if body and conf.set[body.model] then return ctx:deny(403, "model_denied", "model " .. body.model .. " is not allowed") end
end
return p
