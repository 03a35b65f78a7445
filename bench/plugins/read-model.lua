-- read-model.lua — the bench's one-plugin chain: decode the JSON body and
-- read `model`, the least any catalog or quota plugin does per request.
local plugin = { name = "read-model", priority = 100 }

plugin.schema = {
  deny = { type = "string", default = "never-this-model" },
}

function plugin.access(ctx, conf)
  local body = ctx.request:json()
  if body and body.model == conf.deny then
    return ctx:deny(403, "model_denied", "this model is not allowed")
  end
end

return plugin
