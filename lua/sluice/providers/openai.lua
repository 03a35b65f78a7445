-- openai.lua — OpenAI (api.openai.com). The internal form is OpenAI's own,
-- so requests and responses pass through with the model renamed and
-- stream usage requested (openai_family.lua holds the shared code).
local family = require "sluice.providers.openai_family"

return family.new({
  name = "openai",
  root = "/v1",
  chat_path = function() return "/chat/completions" end,
  embeddings_path = function() return "/embeddings" end,
  header = "authorization",
  prefix = "Bearer ",
})
