-- audit-notes.lua — a spec helper, not a policy: a plugin with a log phase
-- makes the runtime keep the request's ctx past access and route, so a spec
-- can run t.log() and read the audit notes (ctx:annotate) other plugins left.
local audit_notes = { name = "audit-notes", priority = 0 }

function audit_notes.log(ctx, conf, record)
end

return audit_notes
