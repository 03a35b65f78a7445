-- azure.lua — Azure OpenAI. Same bodies as OpenAI; the deployment names the
-- model in the URL (/openai/deployments/{deployment}/…?api-version=…), so
-- `model` is removed from the body, and the key goes in the api-key header.
local family = require "sluice.providers.openai_family"

local tostring = tostring
local DEFAULT_API_VERSION = "2024-10-21" -- GA; supports stream_options

-- Deployment names are [A-Za-z0-9_.-]; anything else is escaped so it
-- cannot change the path.
local function escape(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c)
    return ("%%%02X"):format(c:byte())
  end))
end

local function deployment(target)
  return escape(target.deployment or target.model)
end

return family.new({
  name = "azure",
  root = "/openai",
  chat_path = function(t) return "/deployments/" .. deployment(t) .. "/chat/completions" end,
  embeddings_path = function(t) return "/deployments/" .. deployment(t) .. "/embeddings" end,
  query = function(t) return { ["api-version"] = t.api_version or DEFAULT_API_VERSION } end,
  header = "api-key",
  keep_model = false,
})
