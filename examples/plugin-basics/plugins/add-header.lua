-- add-header.lua — every request that leaves the gateway names its owner.
-- The header (x-team by default) carries a fixed value from the policy, so a
-- provider's logs and the backend's own traces say which team a call belongs
-- to without any application sending it. The gateway's value replaces
-- whatever the client sent under that name: a client cannot claim another
-- team. The decision is noted in the request's audit notes.
local add_header = { name = "add-header", priority = 800 }

-- Headers the gateway sets or strips itself on the way upstream (the
-- client's credentials, framing, the correlation id): a plugin value for
-- them would never arrive, so the policy is refused instead.
local RESERVED = {
  host = true, authorization = true, ["proxy-authorization"] = true,
  ["api-key"] = true, ["x-api-key"] = true, ["x-request-id"] = true,
  ["content-length"] = true, ["transfer-encoding"] = true,
  connection = true, ["keep-alive"] = true, te = true, trailer = true,
  upgrade = true, expect = true, ["proxy-connection"] = true,
}

local function header_name(v)
  if not v:match("^[%w!#$%%&'*+%-.^_`|~]+$") then
    return false, "is not a valid HTTP header name"
  end
  if RESERVED[v:lower()] then
    return false, "is set by the gateway itself and cannot be added by a plugin"
  end
  return true
end

local function header_value(v)
  if v:find("[%z\r\n]") then
    return false, "must not contain line breaks or NUL"
  end
  return true
end

add_header.schema = {
  header = { type = "string", default = "x-team", check = header_name },
  value = { type = "string", required = true, check = header_value },
}

function add_header.init(conf)
  conf.header = conf.header:lower() -- header names travel in lowercase
end

function add_header.access(ctx, conf)
  ctx.request:set_header(conf.header, conf.value)
  ctx:annotate("owner_header", conf.header .. ": " .. conf.value)
end

return add_header
