/* mock.h — the mock provider shipped with sluice: a real HTTP server that
 * answers like the provider APIs sluice adapts to (OpenAI and compatible
 * servers, Azure OpenAI, Anthropic Messages, Google Gemini), streamed and
 * not, for the quickstart, the tests and the benchmarks. Faults are chosen
 * per request with x-mock-* headers or for every request with the defaults
 * given here, and every provider call is recorded for specs to inspect.
 *
 * Provider routes (POST; bodies shaped like the real APIs'):
 *   /v1/chat/completions         OpenAI chat; "stream": true for SSE, with
 *                                stream_options.include_usage honoured
 *   /v1/embeddings               OpenAI embeddings: input string or array
 *                                of strings, 8 deterministic floats each
 *   /openai/deployments/{dep}/chat/completions?api-version=…
 *   /openai/deployments/{dep}/embeddings?api-version=…
 *                                Azure OpenAI: OpenAI bodies with model =
 *                                dep, plus prompt_filter_results and per-
 *                                choice content_filter_results (all safe);
 *                                400 without api-version
 *   /v1/messages                 Anthropic Messages; 400 without an
 *                                anthropic-version header; "stream": true
 *                                sends message_start, content_block_start,
 *                                ping, content_block_delta per piece,
 *                                content_block_stop, message_delta,
 *                                message_stop (event: NAME / data: JSON)
 *   /v1beta/models/{model}:generateContent        (also under /v1/)
 *   /v1beta/models/{model}:streamGenerateContent  Gemini; ?alt=sse gives
 *                                SSE data events, else one JSON array
 *                                streamed element by element
 * Other routes:
 *   GET /v1/models               the model list (OpenAI)
 *   GET /health
 *   GET /mock/stats              connections, requests, recorded (counts)
 *   ANY /mock/echo, /v1/echo     the request as received, as JSON
 *   GET /mock/requests           the last 50 provider calls received, oldest
 *                                first: {"total":N,"requests":[{"seq",
 *                                "method","path" (with query),"headers"
 *                                ([[name,value]…] as received),
 *                                "body_bytes","body" (first 256 KiB)}]}
 *   DELETE /mock/requests        forget them (seq keeps counting)
 * Every request but /health and the /mock/ routes is recorded, refused
 * ones included.
 *
 * Tools: when the request offers tools (OpenAI/Azure tools[].function,
 * Anthropic tools[], Gemini tools[0].functionDeclarations[]) and the last
 * turn is the user's (not a tool result: OpenAI role "tool", Anthropic
 * tool_result block, Gemini functionResponse part), the answer calls the
 * first tool with the arguments {"location":"Paris"}: OpenAI tool_calls
 * (id call_mock, finish_reason tool_calls, arguments streamed in 5
 * pieces), Anthropic tool_use block (id toolu_mock, stop_reason tool_use,
 * input_json_delta pieces), Gemini functionCall part (one chunk). After a
 * tool result the answer is text again. OpenAI tool_choice "none" opts out.
 *
 * Credentials (only presence is checked; 401 in the API's error shape):
 *   OpenAI  Authorization: Bearer …  only with opts.require_auth or the
 *                                    header x-mock-require-auth: 1
 *   Azure   api-key                  always
 *   Anthropic x-api-key              always
 *   Gemini  x-goog-api-key or ?key=  always
 *
 * Switches (headers), for every provider route:
 *   x-mock-status: 429|500|503…   answer with that error status, in the
 *                                 API's shape (Anthropic: 429
 *                                 rate_limit_error, 529 overloaded_error,
 *                                 5xx api_error; Gemini: RESOURCE_EXHAUSTED,
 *                                 UNAVAILABLE, INTERNAL…; Azure: code "429")
 *   x-mock-retry-after: 2          Retry-After on that error
 *   x-mock-delay-ms: 300           wait before the response head
 *   x-mock-chunks: 8               text pieces in a stream (default 7)
 *   x-mock-chunk-delay-ms: 50      wait between stream pieces
 *   x-mock-fault: reset | reset-mid-stream | garbage | garbage-body |
 * close-delimited | hang x-mock-require-auth: 1         check OpenAI
 * credentials on this request
 *
 * Token counts, deterministic:
 *   prompt     = ceil(B / 4), at least 1, where B is the bytes of prompt
 *                text: every string under messages (OpenAI, Anthropic, plus
 *                Anthropic's system), contents and systemInstruction
 *                (Gemini), input (embeddings) — counting strings and the
 *                "text", "content" and "parts" fields, not roles or names
 *   completion = 7 (the words of "Hello from the sluice mock provider.")
 *                for a whole answer, the pieces sent for a stream
 *                (x-mock-chunks), 5 for a tool call
 *   total      = prompt + completion; embeddings report prompt = total.
 * Anthropic's message_start reports output_tokens 1, message_delta the
 * final count; Gemini chunks carry running candidatesTokenCount. */
#ifndef SL_MOCK_H
#define SL_MOCK_H

#include "http_server.h"

typedef struct sl_mock_opts {
    int status;   /* default error status, 0 for none */
    int delay_ms; /* default delay before the head */
    const char *fault;
    int require_auth; /* check OpenAI credentials on every request too */
} sl_mock_opts;

typedef struct sl_mock sl_mock;

/* A mock for one worker's loop; free with sl_mock_free(). The record of
 * received requests is shared by every mock of the process. */
sl_mock *sl_mock_new(uv_loop_t *loop, const sl_mock_opts *opts);
sl_http_handler sl_mock_handler(sl_mock *m);
/* Stop pending timers (shutdown); requests waiting on them are aborted. */
void sl_mock_close(sl_mock *m);
void sl_mock_free(sl_mock *m);

#endif
