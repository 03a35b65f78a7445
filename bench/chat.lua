-- chat.lua — wrk script: POST a ~1 KB OpenAI chat completion body.
--
-- Used by bench/run.sh for all three targets (direct mock, nginx, sluice),
-- so every target sees the same bytes. done() prints one parseable line:
--   BENCH_RESULT requests=N duration_us=N rps=F p50_us=F p90_us=F p99_us=F
--     max_us=F errors=N non2xx=N
-- (latencies in microseconds, as wrk records them).

local prompt = string.rep("Summarise the quarterly report for the board. ", 16)

wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-0000000000000000"
wrk.body = '{"model":"gpt-4o-mini","temperature":0.2,"max_tokens":256,'
  .. '"user":"bench","messages":['
  .. '{"role":"system","content":"You are a concise assistant for the '
  .. 'finance team. Answer in plain English, no more than five bullet '
  .. 'points, and never include account numbers."},'
  .. '{"role":"user","content":"' .. prompt .. '"}]}'

function done(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout
  local secs = summary.duration / 1e6
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d rps=%.1f p50_us=%.1f "
      .. "p90_us=%.1f p99_us=%.1f max_us=%.1f errors=%d non2xx=%d "
      .. "body_bytes=%d\n",
    summary.requests, summary.duration, summary.requests / secs,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, errors, e.status, #wrk.body))
end
