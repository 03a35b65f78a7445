-- Admin API e2e specs: a gateway with an admin listener, calls to it with a
-- bearer token, and the two-backend policies and stamp plugin that
-- publishing specs send.
local proc = require "spec.helpers.proc"
local http = require "spec.helpers.http"
local json = require "sluice.json"

local M = {}

-- A gateway (proc.gateway: opts.policy, opts.dir, opts.port) with an admin
-- listener on opts.aport (a free port by default): config(dir, aport)
-- returns its sluice.yaml (the admin section included). Waits for the admin
-- port; g.aport is it.
function M.gateway(opts, config)
  local aport = opts.aport or proc.free_port()
  local g = proc.gateway({
    policy = opts.policy, dir = opts.dir, port = opts.port,
    config = function(_, dir) return config(dir, aport) end,
  })
  proc.wait_port(g.proc, aport)
  g.aport = aport
  return g
end

-- METHOD PATH on g's admin port with `token` (none when nil) as bearer; a
-- table body is sent as JSON, a POST without one with an empty body.
-- Returns the response and its decoded JSON body (nil when empty).
function M.call(g, token, method, path, body, timeout)
  local headers = {}
  if token then headers.authorization = "Bearer " .. token end
  if type(body) == "table" then body = json.encode(body) end
  if method == "POST" and body == nil then body = "" end
  local res = assert(http.request(g.aport, { method = method, path = path, headers = headers,
    body = body, timeout = timeout or 30 }))
  return res, res.body and res.body ~= "" and json.decode(res.body) or nil
end

-- Backends a and b (the two mocks), `default` the default backend, and the
-- keys of `extra` on top.
function M.two_backends(mock_a, mock_b, default, extra)
  local p = {
    backends = {
      a = { provider = "openai", url = mock_a.url, region = "local" },
      b = { provider = "openai", url = mock_b.url, region = "local" },
    },
    default_backend = default,
  }
  for k, v in pairs(extra or {}) do p[k] = v end
  return p
end

-- The code of plugin "stamp", version `tag`: it sets x-stamp: tag on
-- every answer.
function M.stamp_plugin(tag)
  return ("-- version %s\nreturn { name = 'stamp', access = function(ctx) "
    .. "ctx:set_response_header('x-stamp', '%s') end }\n"):format(tag, tag)
end

return M
