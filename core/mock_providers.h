/* mock_providers.h — the inside of the mock provider, shared by mock.c
 * (routes, credentials, faults, timing, recording), mock_read.c (what a
 * call asks for) and mock_providers.c (what each provider API's bytes look
 * like). Not a room's door: only the mock's files include it. Routes,
 * switches and token formulas: mock.h. */
#ifndef SL_MOCK_PROVIDERS_H
#define SL_MOCK_PROVIDERS_H

#include "http_server.h"

/* The answer's text comes in this many words (stream pieces), a tool
 * call's arguments in this many pieces. */
#define SL_MOCK_WORDS 7
#define SL_MOCK_ARG_PIECES 5

enum {
    SL_MOCK_OPENAI, /* and any OpenAI-compatible client */
    SL_MOCK_AZURE,
    SL_MOCK_ANTHROPIC,
    SL_MOCK_GEMINI
};

/* One provider call as the mock understood it. mock.c sets api,
 * embeddings, and (from the path) model, stream and sse for Azure and
 * Gemini; sl_mock_read_call() fills in the rest from the body. */
typedef struct sl_mock_call {
    int api;        /* SL_MOCK_* */
    int embeddings; /* an embeddings call (OpenAI, Azure) */
    int stream;
    int sse;           /* Gemini: alt=sse; else a streamed JSON array */
    int include_usage; /* OpenAI: stream_options.include_usage */
    int tool;          /* answer with a call to tool_name */
    int pieces;        /* content pieces a stream sends */
    int prompt_tokens;
    char model[128];    /* safe to print inside a JSON string */
    char tool_name[64]; /* idem */
    /* x-mock-content-filter: CATEGORY flags the answer in that category
     * (Azure: content_filter_results filtered at severity high; OpenAI and
     * Azure: finish_reason content_filter; Gemini: safetyRatings HIGH,
     * blocked, finishReason SAFETY; Anthropic: stop_reason refusal).
     * "prompt:CATEGORY" blocks the prompt instead (Gemini:
     * promptFeedback.blockReason SAFETY and no candidates; Azure:
     * prompt_filter_results filtered; the others answer normally).
     * Lower-case letters and '_' only; "" when absent. */
    char filter[32];
    int filter_prompt;
} sl_mock_call;

/* Read r's body into c. chunks < 0 means the default number of pieces. */
void sl_mock_read_call(sl_mock_call *c, const sl_http_req *r, int chunks);

/* An error in the API's own shape, then end r. code (may be NULL) is the
 * OpenAI/Azure "code"; message NULL means "mock error <status>". */
void sl_mock_send_error(sl_http_req *r, int api, int status, int retry_after,
                        const char *code, const char *message);
/* A 200 whose JSON body breaks off (fault garbage-body), then end r. */
void sl_mock_send_garbage_body(sl_http_req *r, int api);
/* The whole (non-streamed) answer, then end r. */
void sl_mock_send_answer(const sl_mock_call *c, sl_http_req *r);
/* The embeddings answer for r's body (or a 400), then end r. */
void sl_mock_send_embeddings(const sl_mock_call *c, sl_http_req *r);

/* A stream: the head and what comes before the content, piece i of
 * c->pieces, then what comes after the content (the caller ends r). */
void sl_mock_stream_open(const sl_mock_call *c, sl_http_req *r);
void sl_mock_stream_piece(const sl_mock_call *c, sl_http_req *r, int i);
void sl_mock_stream_close(const sl_mock_call *c, sl_http_req *r);

#endif
