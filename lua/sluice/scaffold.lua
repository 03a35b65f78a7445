-- scaffold.lua — `sluice new-plugin NAME`: a plugin and its spec that pass
-- as generated, for a platform team to edit.
local M = {}

local plugin_template = [[
-- %s.lua — what rule this plugin enforces, and why.
-- (Replace this header: a reviewer reads it first.)
local plugin = { name = "%s", priority = 500 }

plugin.schema = {
  header = { type = "string", default = "x-%s" },
  value = { type = "string", required = true },
}

function plugin.init(conf)
  -- Precompute here (compile patterns, build lookup tables).
end

function plugin.access(ctx, conf)
  ctx.request:set_header(conf.header, conf.value)
  ctx:annotate("%s", "header set")
end

return plugin
]]

local spec_template = [[
-- %s_spec.lua — behaviour of the %s plugin.
local t = require "sluice.test"

describe("%s plugin", function()
  it("sets its header on the request that goes upstream", function()
    local chain = t.chain({ { name = "%s", config = { value = "on" } } })
    local res = t.request(chain, { json = { model = "any" } })
    assert.equals("ok", res.action)
    assert.equals("on", res.header_map["x-%s"])
  end)

  it("refuses a configuration without a value", function()
    local chain, err = t.try_chain({ { name = "%s", config = {} } })
    assert.is_nil(chain)
    assert.matches("value: is required", err)
  end)
end)
]]

local function write_new(path, content)
  local f = io.open(path, "rb")
  if f then
    f:close()
    return nil, path .. " already exists"
  end
  f = io.open(path, "wb")
  if not f then return nil, "cannot write " .. path end
  f:write(content)
  f:close()
  return true
end

function M.new_plugin(name, plugin_dir, spec_dir)
  if not name:match("^[a-z][a-z0-9_-]*$") then
    return nil, "plugin names use a-z, 0-9, '-' and '_' and start with a letter"
  end
  os.execute(("mkdir -p '%s' '%s'"):format(plugin_dir, spec_dir))
  local ppath = plugin_dir .. "/" .. name .. ".lua"
  local spath = spec_dir .. "/" .. (name:gsub("-", "_")) .. "_spec.lua"
  local ok, err = write_new(ppath, plugin_template:format(name, name, name, name))
  if not ok then return nil, err end
  ok, err = write_new(spath, spec_template:format((name:gsub("-", "_")), name, name, name, name, name))
  if not ok then return nil, err end
  return ppath, spath
end

return M
