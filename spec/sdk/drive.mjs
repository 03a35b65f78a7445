// drive.mjs — one scenario through a real client SDK, as an application
// would call sluice; prints what the application saw as one JSON line.
//   node drive.mjs openai|anthropic BASE_URL MODEL SCENARIO
import OpenAI from "openai";
import Anthropic from "@anthropic-ai/sdk";

const [sdk, base, model, scenario] = process.argv.slice(2);
const weather = {
  name: "get_weather",
  description: "Current weather for a city",
  parameters: { type: "object", properties: { location: { type: "string" } }, required: ["location"] },
};
// An application's own key, extra headers and prompt, when a scenario
// needs them (SLUICE_APP_KEY, SLUICE_HEADERS as JSON, SLUICE_PROMPT).
const appKey = process.env.SLUICE_APP_KEY || "app-key-not-a-provider-key";
const defaultHeaders = JSON.parse(process.env.SLUICE_HEADERS || "{}");
const ask = [{ role: "user", content: process.env.SLUICE_PROMPT || "What is the weather in Paris?" }];

async function openai() {
  const client = new OpenAI({ baseURL: base + "/v1", apiKey: appKey, defaultHeaders, maxRetries: 0 });
  switch (scenario) {
    case "chat-headers": { // the answer and the gateway's headers on it
      const { data: r, response } = await client.chat.completions
        .create({ model, messages: ask }).withResponse();
      const headers = {};
      for (const [k, v] of response.headers) if (k.startsWith("x-sluice") || k === "deprecation" || k === "sunset") headers[k] = v;
      return { model: r.model, content: r.choices[0].message.content, headers };
    }
    case "chat": {
      const r = await client.chat.completions.create({ model, messages: ask });
      return { model: r.model, content: r.choices[0].message.content, finish: r.choices[0].finish_reason,
               usage: r.usage };
    }
    case "stream": {
      const s = await client.chat.completions.create({ model, messages: ask, stream: true,
        stream_options: { include_usage: true } });
      let content = "", finish = null, usage = null, models = new Set(), chunks = 0;
      for await (const c of s) {
        chunks++;
        models.add(c.model);
        if (c.usage) usage = c.usage;
        const ch = c.choices[0];
        if (ch && ch.delta && ch.delta.content) content += ch.delta.content;
        if (ch && ch.finish_reason) finish = ch.finish_reason;
      }
      return { models: [...models], content, finish, usage, chunks };
    }
    case "tools": {
      const r = await client.chat.completions.create({ model, messages: ask,
        tools: [{ type: "function", function: weather }] });
      const m = r.choices[0].message;
      const call = m.tool_calls && m.tool_calls[0];
      return { finish: r.choices[0].finish_reason, name: call && call.function.name,
               arguments: call && JSON.parse(call.function.arguments) };
    }
    case "embeddings": {
      const r = await client.embeddings.create({ model, input: ["hello", "world"] });
      return { count: r.data.length, dims: r.data[0].embedding.length, model: r.model };
    }
    case "models": {
      const ids = [];
      for await (const m of client.models.list()) ids.push(m.id);
      return { ids };
    }
  }
  throw new Error("unknown scenario " + scenario);
}

async function anthropic() {
  const client = new Anthropic({ baseURL: base, apiKey: appKey, defaultHeaders, maxRetries: 0 });
  switch (scenario) {
    case "chat": {
      const r = await client.messages.create({ model, max_tokens: 64, messages: ask });
      return { model: r.model, content: r.content[0].text, stop: r.stop_reason, usage: r.usage };
    }
    case "stream": {
      const s = client.messages.stream({ model, max_tokens: 64, messages: ask });
      const events = [];
      s.on("streamEvent", (e) => events.push(e.type));
      const m = await s.finalMessage();
      return { content: m.content[0].text, stop: m.stop_reason, usage: m.usage, events };
    }
    case "tools": {
      const r = await client.messages.create({ model, max_tokens: 64, messages: ask,
        tools: [{ name: weather.name, description: weather.description, input_schema: weather.parameters }] });
      const use = r.content.find((b) => b.type === "tool_use");
      return { stop: r.stop_reason, name: use && use.name, input: use && use.input };
    }
  }
  throw new Error("unknown scenario " + scenario);
}

try {
  const out = await (sdk === "anthropic" ? anthropic() : openai());
  console.log(JSON.stringify({ ok: true, ...out }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, status: e.status ?? null, code: e.code ?? null,
                               error: String(e.message || e) }));
}
