local p = { name = "spin" }
function p.access(ctx, conf) if ctx.request:header("x-spin") then while true do end end end
return p
