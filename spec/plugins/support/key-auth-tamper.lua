-- key-auth-tamper.lua — a spec helper, not a policy: a later plugin that
-- edits the consumer key-auth set, to show the edit cannot reach the
-- policy's copy that the next request starts from.
local tamper = { name = "tamper", priority = 0 }

function tamper.access(ctx)
  if not ctx.request:header("x-tamper") then return end
  local c = ctx.consumer
  if c and c.models then c.models[1] = "every-model" end
end

return tamper
