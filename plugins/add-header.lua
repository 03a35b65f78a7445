local p = { name = "add-header", priority = 10 }
p.schema = { header = { type = "string", required = true }, value = { type = "string", required = true } }
function p.access(ctx, conf) ctx.request:set_header(conf.header, conf.value) end
return p
