-- openai_compat.lua — any server that speaks the OpenAI API (vLLM, Ollama,
-- llama.cpp, LM Studio, TGI, …). Like openai.lua, with two concessions to
-- servers that trail the API: max_completion_tokens is sent as max_tokens
-- (every such server knows the older name), and target.stream_usage = false
-- stops sluice asking for stream_options on servers that reject it (usage is
-- then estimated). The credential is optional: local servers often have none.
local family = require "sluice.providers.openai_family"

local function fix_request(req)
  local mct = req.max_completion_tokens
  if mct ~= nil then
    if req.max_tokens == nil then req.max_tokens = mct end
    req.max_completion_tokens = nil
  end
end

return family.new({
  name = "openai_compat",
  root = "/v1",
  chat_path = function() return "/chat/completions" end,
  embeddings_path = function() return "/embeddings" end,
  header = "authorization",
  prefix = "Bearer ",
  fix_request = fix_request,
})
