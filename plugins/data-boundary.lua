-- data-boundary.lua — data goes only where policy says it may go.
--
-- Every request has a data class: the consumer's own (set by the auth
-- plugin from policy or token claims), or `default_class` for callers
-- without one. A caller may raise it for one request with a header (say,
-- a normally "internal" app sending a "confidential" document) but never
-- lower it. Each backend declares in policy the classes it may receive
-- (`data_classes:`) and its `region`. Targets that may not receive the
-- request's class, or that sit outside the consumer's allowed regions, are
-- removed before any attempt; when none remains the request is refused
-- with 403 saying why. A backend that declares no classes receives only
-- the lowest class — forgetting a label never widens the boundary. A live
-- policy exception may grant a consumer a backend the rules would remove;
-- the audit record then names it.
local boundary = { name = "data-boundary", priority = 700 }

boundary.schema = {
  -- The classes, lowest first: a class may go wherever a higher one may.
  classes = { type = "array", elements = { type = "string" },
              default = { "public", "internal", "confidential", "restricted" } },
  -- For callers whose consumer names no class (or no consumer at all).
  default_class = { type = "string", default = "internal" },
  -- The header a caller raises the class with; removed before upstream.
  header = { type = "string", default = "x-sluice-data-class" },
}

function boundary.init(conf)
  conf.rank = {}
  for i, c in ipairs(conf.classes) do
    if conf.rank[c] then error("classes: '" .. c .. "' is listed twice", 0) end
    conf.rank[c] = i
  end
  if not conf.rank[conf.default_class] then
    error("default_class: '" .. conf.default_class .. "' is not one of classes", 0)
  end
  conf.lowest = conf.classes[1]
  conf.header = conf.header:lower()
end

local function contains(list, v)
  for _, x in ipairs(list) do
    if x == v then return true end
  end
  return false
end

-- The request's class, or nil and a denial (status, code, message).
local function request_class(ctx, conf)
  local consumer = ctx.consumer
  local own = type(consumer) == "table" and consumer.data_class or conf.default_class
  if not conf.rank[own] then
    return nil, 403, "data_class_unknown", "the caller's data class is not one this gateway knows"
  end
  local asked = ctx.request:header(conf.header)
  if asked == nil then return own end
  ctx.request:remove_header(conf.header)
  -- a class name is short: anything long is unknown, unparsed
  asked = #asked <= 64 and asked:lower():match("^%s*(.-)%s*$") or asked
  if not conf.rank[asked] then
    return nil, 400, "data_class_unknown",
      ("%s names an unknown data class (known: %s)"):format(conf.header, table.concat(conf.classes, ", "))
  end
  if conf.rank[asked] < conf.rank[own] then
    return nil, 403, "data_class_lowered",
      ("this caller's data is '%s' and may not be sent as '%s'"):format(own, asked)
  end
  local may = type(consumer) == "table" and consumer.raise
  if asked ~= own and type(may) == "table" and not contains(may, asked) then
    return nil, 403, "data_class_not_allowed",
      ("this caller may not send '%s' data"):format(asked)
  end
  return asked
end

-- Why target t may not take class `cls` from this consumer, or nil.
local function refusal(conf, consumer, t, cls)
  local classes = t.data_classes or { conf.lowest }
  if not contains(classes, cls) then
    return ("%s may not receive %s data"):format(t.backend, cls)
  end
  local regions = type(consumer) == "table" and consumer.regions
  if type(regions) == "table" and not contains(regions, t.region) then
    return ("%s is in region %s, outside %s"):format(t.backend, tostring(t.region or "unknown"),
      table.concat(regions, ", "))
  end
end

function boundary.access(ctx, conf)
  local cls, status, code, msg = request_class(ctx, conf)
  if not cls then return ctx:deny(status, code, msg) end
  ctx:annotate("data_class", cls)
  local route = ctx.route
  if not route or not route.targets then
    return ctx:deny(403, "data_boundary", "no backend is known for this request; refusing to send its data")
  end
  local consumer = ctx.consumer
  local keep, why = {}, {}
  for _, t in ipairs(route.targets) do
    local no = refusal(conf, consumer, t, cls)
    if no then
      local id = ctx:grant("backends", t.backend)
      if id then
        ctx:decision("allow", ("%s kept by exception %s (%s)"):format(t.backend, id, no))
        no = nil
      end
    end
    if no then why[#why + 1] = no else keep[#keep + 1] = { backend = t.backend, model = t.model } end
  end
  if #keep == 0 then
    return ctx:deny(403, "data_boundary",
      ("no approved backend may receive this request's %s data: %s"):format(cls, table.concat(why, "; ")))
  end
  -- hold the boundary for the rest of the request, whatever runs later
  -- (a fallback to a larger model, a route plugin)
  local names = {}
  for i, t in ipairs(keep) do names[i] = t.backend end
  ctx:confine(names, ("this request's %s data may go only to %s"):format(cls, table.concat(names, ", ")))
  if #why > 0 then
    ctx:set_targets(keep)
    ctx:decision("modify", "removed targets: " .. table.concat(why, "; "))
  end
end

return boundary
