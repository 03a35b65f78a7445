/* mock_providers.c — the mock provider's bodies, one provider API at a
 * time: OpenAI (and compatible), Azure OpenAI, Anthropic Messages and
 * Google Gemini; whole answers, streams, tool calls, embeddings and errors,
 * shaped like the real APIs' so that adapters are tested against what they
 * will meet. mock.c decides when and whether to answer; this file only
 * knows the bytes. Everything is printed into stack buffers: the OpenAI
 * chat answer is the benchmarks' upstream and must stay cheap. */
#include "mock_providers.h"

#include <cjson/cJSON.h>
#include <mbedtls/base64.h>
#include <stdio.h>
#include <time.h>

static const char *const words[] = {"Hello", " from",     " the", " sluice",
                                    " mock", " provider", "."};
#define NWORDS ((int)SL_ARRAY_LEN(words))
_Static_assert(SL_ARRAY_LEN(words) == SL_MOCK_WORDS, "mock_providers.h");
static const char answer_text[] = "Hello from the sluice mock provider.";

/* The tool call's arguments, {"location":"Paris"}, escaped for a JSON
 * string and cut where a real stream would cut them. */
static const char *const arg_pieces[] = {"{\\\"", "location", "\\\":\\\"",
                                         "Paris", "\\\"}"};
#define NARGS ((int)SL_ARRAY_LEN(arg_pieces))
_Static_assert(SL_ARRAY_LEN(arg_pieces) == SL_MOCK_ARG_PIECES,
               "mock_providers.h");
static const char args_escaped[] = "{\\\"location\\\":\\\"Paris\\\"}";
static const char args_object[] = "{\"location\":\"Paris\"}";

#define SAFE "{\"filtered\":false,\"severity\":\"safe\"}"
#define AZURE_FILTERS                                                          \
    "{\"hate\":" SAFE ",\"self_harm\":" SAFE ",\"sexual\":" SAFE               \
    ",\"violence\":" SAFE "}"
#define PROMPT_FILTERS                                                         \
    "\"prompt_filter_results\":[{\"prompt_index\":0,"                          \
    "\"content_filter_results\":" AZURE_FILTERS "}]"

#define RATING(c)                                                              \
    "{\"category\":\"HARM_CATEGORY_" c "\",\"probability\":\"NEGLIGIBLE\"}"
static const char gemini_ratings[] = "[" RATING("SEXUALLY_EXPLICIT") "," RATING(
    "HATE_SPEECH") "," RATING("HARASSMENT") "," RATING("DANGEROUS_CONTENT") "]";

/* The content filters of a flagged answer: Azure's four categories, the
 * one named by c->filter filtered at severity high (added when it is not
 * one of the four). */
static void azure_filters(const sl_mock_call *c, sl_buf *b)
{
    static const char *const cats[] = {"hate", "self_harm", "sexual",
                                       "violence"};
    int found = 0;
    sl_buf_puts(b, "{");
    for (int k = 0; k < 4; k++) {
        int hit = strcmp(c->filter, cats[k]) == 0;
        found |= hit;
        sl_buf_printf(b, "%s\"%s\":{\"filtered\":%s,\"severity\":\"%s\"}",
                      k ? "," : "", cats[k], hit ? "true" : "false",
                      hit ? "high" : "safe");
    }
    if (!found)
        sl_buf_printf(b, ",\"%s\":{\"filtered\":true,\"severity\":\"high\"}",
                      c->filter);
    sl_buf_puts(b, "}");
}

/* Gemini's safety ratings with c->filter rated HIGH and blocked. */
static void gemini_flagged_ratings(const sl_mock_call *c, sl_buf *b)
{
    static const char *const names[][2] = {{"hate", "HATE_SPEECH"},
                                           {"sexual", "SEXUALLY_EXPLICIT"},
                                           {"harassment", "HARASSMENT"},
                                           {"dangerous", "DANGEROUS_CONTENT"}};
    int found = 0;
    sl_buf_puts(b, "[");
    for (int k = 0; k < 4; k++) {
        int hit = strcmp(c->filter, names[k][0]) == 0;
        found |= hit;
        sl_buf_printf(b,
                      "%s{\"category\":\"HARM_CATEGORY_%s\",\"probability\":"
                      "\"%s\"%s}",
                      k ? "," : "", names[k][1], hit ? "HIGH" : "NEGLIGIBLE",
                      hit ? ",\"blocked\":true" : "");
    }
    if (!found) {
        sl_buf_puts(b, ",{\"category\":\"HARM_CATEGORY_");
        for (const char *p = c->filter; *p; p++) {
            char up = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
            sl_buf_printf(b, "%c", up);
        }
        sl_buf_puts(b, "\",\"probability\":\"HIGH\",\"blocked\":true}");
    }
    sl_buf_puts(b, "]");
}

/* Completion tokens: a tool call counts its argument pieces; text counts
 * its words, or the pieces a stream sent. */
static int out_tokens(const sl_mock_call *c)
{
    if (c->tool)
        return NARGS;
    return c->stream ? c->pieces : NWORDS;
}

/* ---- plumbing ---- */

static void send_json(sl_http_req *r, int status, const char *body, size_t n)
{
    sl_http_response_begin(r, status);
    sl_http_response_header(r, "content-type", 12, "application/json", 16);
    sl_http_response_head_end(r, (int64_t)n);
    sl_http_response_body(r, body, n);
    sl_http_response_end(r);
}

/* snprintf that never reports more than it wrote. */
static size_t fit(int n, size_t cap)
{
    return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}

static void sse_data(sl_http_req *r, const char *json, size_t n)
{
    sl_http_response_body(r, "data: ", 6);
    sl_http_response_body(r, json, n);
    sl_http_response_body(r, "\n\n", 2);
}

/* ---- errors ---- */

static const char *anthropic_error_type(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 529:
        return "overloaded_error";
    }
    return status >= 500 ? "api_error" : "invalid_request_error";
}

static const char *gemini_status(int status)
{
    switch (status) {
    case 400:
        return "INVALID_ARGUMENT";
    case 401:
        return "UNAUTHENTICATED";
    case 403:
        return "PERMISSION_DENIED";
    case 404:
        return "NOT_FOUND";
    case 409:
        return "ABORTED";
    case 429:
        return "RESOURCE_EXHAUSTED";
    case 501:
        return "NOT_IMPLEMENTED";
    case 503:
        return "UNAVAILABLE";
    case 504:
        return "DEADLINE_EXCEEDED";
    }
    return status >= 500 ? "INTERNAL" : "FAILED_PRECONDITION";
}

void sl_mock_send_error(sl_http_req *r, int api, int status, int retry_after,
                        const char *code, const char *message)
{
    char body[512], dflt[32], codebuf[32];
    int n;
    if (!message) {
        snprintf(dflt, sizeof(dflt), "mock error %d", status);
        message = dflt;
    }
    switch (api) {
    case SL_MOCK_AZURE:
        if (!code) {
            snprintf(codebuf, sizeof(codebuf), "%d", status);
            code = codebuf;
        }
        n = snprintf(body, sizeof(body),
                     "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", code,
                     message);
        break;
    case SL_MOCK_ANTHROPIC:
        n = snprintf(body, sizeof(body),
                     "{\"type\":\"error\",\"error\":{\"type\":\"%s\","
                     "\"message\":\"%s\"}}",
                     anthropic_error_type(status), message);
        break;
    case SL_MOCK_GEMINI:
        n = snprintf(body, sizeof(body),
                     "{\"error\":{\"code\":%d,\"message\":\"%s\","
                     "\"status\":\"%s\"}}",
                     status, message, gemini_status(status));
        break;
    default: {
        const char *type = status == 429   ? "rate_limit_error"
                           : status >= 500 ? "server_error"
                                           : "invalid_request_error";
        if (!code) {
            snprintf(codebuf, sizeof(codebuf), "mock_%d", status);
            code = codebuf;
        }
        n = snprintf(body, sizeof(body),
                     "{\"error\":{\"message\":\"%s\",\"type\":\"%s\","
                     "\"code\":\"%s\"}}",
                     message, type, code);
    }
    }
    size_t len = fit(n, sizeof(body));
    sl_http_response_begin(r, status);
    sl_http_response_header(r, "content-type", 12, "application/json", 16);
    if (retry_after > 0) {
        char ra[16];
        int l = snprintf(ra, sizeof(ra), "%d", retry_after);
        sl_http_response_header(r, "retry-after", 11, ra, (size_t)l);
    }
    sl_http_response_head_end(r, (int64_t)len);
    sl_http_response_body(r, body, len);
    sl_http_response_end(r);
}

void sl_mock_send_garbage_body(sl_http_req *r, int api)
{
    static const char *const bad[] = {
        [SL_MOCK_OPENAI] = "{\"id\": \"chatcmpl-mock\", \"choices\": [tru",
        [SL_MOCK_AZURE] = "{\"id\": \"chatcmpl-mock\", \"choices\": [tru",
        [SL_MOCK_ANTHROPIC] = "{\"id\": \"msg_mock\", \"content\": [tru",
        [SL_MOCK_GEMINI] = "{\"candidates\": [{\"content\": tru",
    };
    send_json(r, 200, bad[api], strlen(bad[api]));
}

/* ---- OpenAI and Azure OpenAI ---- */

/* A text answer flagged by x-mock-content-filter (off the benchmarks'
 * path, so built in a growing buffer). */
static void openai_filtered_answer(const sl_mock_call *c, sl_http_req *r)
{
    int azure = c->api == SL_MOCK_AZURE, answer = !c->filter_prompt;
    sl_buf b;
    sl_buf_init(&b, NULL);
    sl_buf_printf(&b,
                  "{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion\","
                  "\"created\":%ld,\"model\":\"%s\",",
                  (long)time(NULL), c->model);
    if (azure) {
        sl_buf_puts(&b, "\"prompt_filter_results\":[{\"prompt_index\":0,"
                        "\"content_filter_results\":");
        if (answer)
            sl_buf_puts(&b, AZURE_FILTERS);
        else
            azure_filters(c, &b);
        sl_buf_puts(&b, "}],");
    }
    sl_buf_printf(&b,
                  "\"choices\":[{\"index\":0,\"message\":{\"role\":"
                  "\"assistant\",\"content\":\"%s\"},\"finish_reason\":\"%s\"",
                  answer_text, answer ? "content_filter" : "stop");
    if (azure) {
        sl_buf_puts(&b, ",\"content_filter_results\":");
        if (answer)
            azure_filters(c, &b);
        else
            sl_buf_puts(&b, AZURE_FILTERS);
    }
    sl_buf_printf(&b,
                  "}],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,"
                  "\"total_tokens\":%d}}",
                  c->prompt_tokens, NWORDS, c->prompt_tokens + NWORDS);
    if (b.len && b.data)
        send_json(r, 200, b.data, b.len);
    else
        sl_mock_send_error(r, c->api, 500, 0, NULL, "out of memory");
    sl_buf_release(&b);
}

static void openai_answer(const sl_mock_call *c, sl_http_req *r)
{
    char body[2048], tool_msg[256];
    if (c->filter[0]) {
        openai_filtered_answer(c, r);
        return;
    }
    int azure = c->api == SL_MOCK_AZURE, out = out_tokens(c);
    const char *msg = "{\"role\":\"assistant\",\"content\":\"Hello from the "
                      "sluice mock provider.\"}";
    if (c->tool) {
        snprintf(tool_msg, sizeof(tool_msg),
                 "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{"
                 "\"id\":\"call_mock\",\"type\":\"function\",\"function\":{"
                 "\"name\":\"%s\",\"arguments\":\"%s\"}}]}",
                 c->tool_name, args_escaped);
        msg = tool_msg;
    }
    /* One format per API, with the constant parts written out: this is
     * the benchmarks' upstream answer. */
#define CHAT_HEAD                                                              \
    "{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion\",\"created\":"    \
    "%ld,\"model\":\"%s\","
#define CHAT_USAGE                                                             \
    "\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,"                \
    "\"total_tokens\":%d}}"
    int n = snprintf(
        body, sizeof(body),
        azure ? CHAT_HEAD PROMPT_FILTERS
            ",\"choices\":[{\"index\":0,\"message\":%s,\"finish_reason\":"
            "\"%s\",\"content_filter_results\":" AZURE_FILTERS "}]," CHAT_USAGE
              : CHAT_HEAD "\"choices\":[{\"index\":0,\"message\":%s,"
                          "\"finish_reason\":\"%s\"}]," CHAT_USAGE,
        (long)time(NULL), c->model, msg, c->tool ? "tool_calls" : "stop",
        c->prompt_tokens, out, c->prompt_tokens + out);
    send_json(r, 200, body, fit(n, sizeof(body)));
}

static void openai_chunk(const sl_mock_call *c, sl_http_req *r,
                         const char *delta, const char *finish, int filtered)
{
    char ev[1024];
    int azure = filtered && c->api == SL_MOCK_AZURE;
    int n = snprintf(ev, sizeof(ev),
                     azure ? "{\"id\":\"chatcmpl-mock\",\"object\":"
                             "\"chat.completion.chunk\",\"created\":%ld,"
                             "\"model\":\"%s\",\"choices\":[{\"index\":0,"
                             "\"delta\":{%s},\"finish_reason\":%s,"
                             "\"content_filter_results\":" AZURE_FILTERS "}]}"
                           : "{\"id\":\"chatcmpl-mock\",\"object\":"
                             "\"chat.completion.chunk\",\"created\":%ld,"
                             "\"model\":\"%s\",\"choices\":[{\"index\":0,"
                             "\"delta\":{%s},\"finish_reason\":%s}]}",
                     (long)time(NULL), c->model, delta, finish);
    sse_data(r, ev, fit(n, sizeof(ev)));
}

/* A stream chunk whose content filters are c->filter's (Azure): the
 * flagged piece of a flagged answer, or the prompt-filter chunk. */
static void azure_flagged_chunk(const sl_mock_call *c, sl_http_req *r,
                                const char *delta, int prompt)
{
    sl_buf b;
    sl_buf_init(&b, NULL);
    if (prompt) {
        sl_buf_puts(&b, "{\"id\":\"\",\"object\":\"\",\"created\":0,\"model\":"
                        "\"\",\"prompt_filter_results\":[{\"prompt_index\":0,"
                        "\"content_filter_results\":");
        azure_filters(c, &b);
        sl_buf_puts(&b, "}],\"choices\":[]}");
    } else {
        sl_buf_printf(&b,
                      "{\"id\":\"chatcmpl-mock\",\"object\":"
                      "\"chat.completion.chunk\",\"created\":%ld,\"model\":"
                      "\"%s\",\"choices\":[{\"index\":0,\"delta\":{%s},"
                      "\"finish_reason\":null,\"content_filter_results\":",
                      (long)time(NULL), c->model, delta);
        azure_filters(c, &b);
        sl_buf_puts(&b, "}]}");
    }
    if (b.len && b.data)
        sse_data(r, b.data, b.len);
    sl_buf_release(&b);
}

static void openai_open(const sl_mock_call *c, sl_http_req *r)
{
    if (c->api == SL_MOCK_AZURE && c->filter_prompt) {
        azure_flagged_chunk(c, r, NULL, 1);
    } else if (c->api == SL_MOCK_AZURE) {
        static const char pf[] =
            "{\"id\":\"\",\"object\":\"\",\"created\":0,"
            "\"model\":\"\"," PROMPT_FILTERS ",\"choices\":[]}";
        sse_data(r, pf, sizeof(pf) - 1);
    }
    if (!c->tool) {
        openai_chunk(c, r, "\"role\":\"assistant\",\"content\":\"\"", "null",
                     0);
        return;
    }
    char d[256];
    snprintf(d, sizeof(d),
             "\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{"
             "\"index\":0,\"id\":\"call_mock\",\"type\":\"function\","
             "\"function\":{\"name\":\"%s\",\"arguments\":\"\"}}]",
             c->tool_name);
    openai_chunk(c, r, d, "null", 0);
}

static void openai_piece(const sl_mock_call *c, sl_http_req *r, int i)
{
    char d[128];
    if (c->tool)
        snprintf(d, sizeof(d),
                 "\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":"
                 "\"%s\"}}]",
                 arg_pieces[i % NARGS]);
    else
        snprintf(d, sizeof(d), "\"content\":\"%s\"", words[i % NWORDS]);
    if (c->api == SL_MOCK_AZURE && c->filter[0] && !c->filter_prompt &&
        i == c->pieces - 1)
        azure_flagged_chunk(c, r, d, 0);
    else
        openai_chunk(c, r, d, "null", 1);
}

static void openai_close(const sl_mock_call *c, sl_http_req *r)
{
    const char *finish = c->filter[0] && !c->filter_prompt
                             ? "\"content_filter\""
                         : c->tool ? "\"tool_calls\""
                                   : "\"stop\"";
    openai_chunk(c, r, "", finish, 0);
    if (c->include_usage) {
        char ev[512];
        int out = out_tokens(c);
        int n = snprintf(
            ev, sizeof(ev),
            "{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\","
            "\"created\":%ld,\"model\":\"%s\",\"choices\":[],\"usage\":{"
            "\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%"
            "d}}",
            (long)time(NULL), c->model, c->prompt_tokens, out,
            c->prompt_tokens + out);
        sse_data(r, ev, fit(n, sizeof(ev)));
    }
    sse_data(r, "[DONE]", 6);
}

/* A deterministic unit vector-ish of 8 floats for one input text; with
 * base64, as OpenAI sends it then: the float32 little-endian bytes. */
static void embed(sl_buf *b, int index, const char *s, size_t n, int base64)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    sl_buf_printf(b, "%s{\"object\":\"embedding\",\"index\":%d,\"embedding\":",
                  index ? "," : "", index);
    float v[8];
    for (int k = 0; k < 8; k++) {
        h = h * 6364136223846793005ull + 1442695040888963407ull;
        v[k] = (float)((double)(h >> 40) / (double)(1 << 24) * 2.0 - 1.0);
    }
    if (base64) {
        unsigned char enc[64];
        size_t olen = 0;
        mbedtls_base64_encode(enc, sizeof(enc), &olen, (const unsigned char *)v,
                              sizeof(v));
        sl_buf_printf(b, "\"%.*s\"}", (int)olen, enc);
        return;
    }
    sl_buf_puts(b, "[");
    for (int k = 0; k < 8; k++)
        sl_buf_printf(b, "%s%.6f", k ? "," : "", (double)v[k]);
    sl_buf_puts(b, "]}");
}

/* Gemini's batchEmbedContents: {"requests":[{"content":{"parts":[{"text"}]}}]}
 * answered with {"embeddings":[{"values":[…]}]}. */
static void gemini_embeddings(sl_http_req *r)
{
    cJSON *j = cJSON_ParseWithLength(r->body.data, r->body.len);
    const cJSON *reqs = cJSON_GetObjectItemCaseSensitive(j, "requests"), *q;
    if (!cJSON_IsArray(reqs) || cJSON_GetArraySize(reqs) == 0) {
        cJSON_Delete(j);
        sl_mock_send_error(r, SL_MOCK_GEMINI, 400, 0, "INVALID_ARGUMENT",
                           "requests must be a non-empty list");
        return;
    }
    sl_buf b;
    sl_buf_init(&b, NULL);
    sl_buf_puts(&b, "{\"embeddings\":[");
    int i = 0;
    cJSON_ArrayForEach(q, reqs)
    {
        const cJSON *parts = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(q, "content"), "parts");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetArrayItem(parts, 0), "text");
        const char *s = cJSON_IsString(text) ? text->valuestring : "";
        sl_buf b1;
        sl_buf_init(&b1, NULL);
        embed(&b1, 0, s, strlen(s), 0);
        /* reuse the OpenAI item: keep only its array of numbers (the
         * buffer is not NUL-terminated: measure with its length) */
        const char *arr = b1.data ? memchr(b1.data, '[', b1.len) : NULL;
        int alen = arr ? (int)(b1.len - (size_t)(arr - b1.data) - 1) : 2;
        sl_buf_printf(&b, "%s{\"values\":%.*s}", i++ ? "," : "", alen,
                      arr ? arr : "[]");
        sl_buf_release(&b1);
    }
    sl_buf_puts(&b, "]}");
    cJSON_Delete(j);
    send_json(r, 200, b.data, b.len);
    sl_buf_release(&b);
}

void sl_mock_send_embeddings(const sl_mock_call *c, sl_http_req *r)
{
    if (c->api == SL_MOCK_GEMINI) {
        gemini_embeddings(r);
        return;
    }
    cJSON *j = cJSON_ParseWithLength(r->body.data, r->body.len);
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(j, "input"), *e;
    int ok = cJSON_IsString(in);
    if (cJSON_IsArray(in)) {
        ok = cJSON_GetArraySize(in) > 0;
        cJSON_ArrayForEach(e, in) ok = ok && cJSON_IsString(e);
    }
    if (!ok) {
        cJSON_Delete(j);
        sl_mock_send_error(r, c->api, 400, 0, "invalid_request",
                           "input must be a string or an array of strings");
        return;
    }
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(j, "encoding_format");
    int b64 = cJSON_IsString(fmt) && strcmp(fmt->valuestring, "base64") == 0;
    sl_buf b;
    sl_buf_init(&b, NULL);
    sl_buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    if (cJSON_IsString(in)) {
        embed(&b, 0, in->valuestring, strlen(in->valuestring), b64);
    } else {
        int i = 0;
        cJSON_ArrayForEach(e, in)
        {
            embed(&b, i++, e->valuestring, strlen(e->valuestring), b64);
        }
    }
    sl_buf_printf(&b,
                  "],\"model\":\"%s\",\"usage\":{\"prompt_tokens\":%d,"
                  "\"total_tokens\":%d}}",
                  c->model, c->prompt_tokens, c->prompt_tokens);
    cJSON_Delete(j);
    if (b.len && b.data)
        send_json(r, 200, b.data, b.len);
    else
        sl_mock_send_error(r, c->api, 500, 0, NULL, "out of memory");
    sl_buf_release(&b);
}

/* ---- Anthropic Messages ---- */

static void anthropic_event(sl_http_req *r, const char *name, const char *json,
                            size_t n)
{
    sl_http_response_body(r, "event: ", 7);
    sl_http_response_body(r, name, strlen(name));
    sl_http_response_body(r, "\ndata: ", 7);
    sl_http_response_body(r, json, n);
    sl_http_response_body(r, "\n\n", 2);
}

static const char *anthropic_stop(const sl_mock_call *c)
{
    if (c->filter[0] && !c->filter_prompt)
        return "refusal"; /* x-mock-content-filter */
    return c->tool ? "tool_use" : "end_turn";
}

static void anthropic_answer(const sl_mock_call *c, sl_http_req *r)
{
    char body[1024], content[256];
    if (c->tool)
        snprintf(content, sizeof(content),
                 "{\"type\":\"tool_use\",\"id\":\"toolu_mock\",\"name\":\"%s\","
                 "\"input\":%s}",
                 c->tool_name, args_object);
    else
        snprintf(content, sizeof(content),
                 "{\"type\":\"text\",\"text\":\"%s\"}", answer_text);
    int n = snprintf(body, sizeof(body),
                     "{\"id\":\"msg_mock\",\"type\":\"message\",\"role\":"
                     "\"assistant\",\"model\":\"%s\",\"content\":[%s],"
                     "\"stop_reason\":\"%s\",\"stop_sequence\":null,\"usage\":"
                     "{\"input_tokens\":%d,\"output_tokens\":%d}}",
                     c->model, content, anthropic_stop(c), c->prompt_tokens,
                     out_tokens(c));
    send_json(r, 200, body, fit(n, sizeof(body)));
}

static void anthropic_open(const sl_mock_call *c, sl_http_req *r)
{
    char ev[512];
    int n = snprintf(ev, sizeof(ev),
                     "{\"type\":\"message_start\",\"message\":{\"id\":"
                     "\"msg_mock\",\"type\":\"message\",\"role\":\"assistant\","
                     "\"model\":\"%s\",\"content\":[],\"stop_reason\":null,"
                     "\"stop_sequence\":null,\"usage\":{\"input_tokens\":%d,"
                     "\"output_tokens\":1}}}",
                     c->model, c->prompt_tokens);
    anthropic_event(r, "message_start", ev, fit(n, sizeof(ev)));
    if (c->tool)
        n = snprintf(ev, sizeof(ev),
                     "{\"type\":\"content_block_start\",\"index\":0,"
                     "\"content_block\":{\"type\":\"tool_use\",\"id\":"
                     "\"toolu_mock\",\"name\":\"%s\",\"input\":{}}}",
                     c->tool_name);
    else
        n = snprintf(ev, sizeof(ev),
                     "{\"type\":\"content_block_start\",\"index\":0,"
                     "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}");
    anthropic_event(r, "content_block_start", ev, fit(n, sizeof(ev)));
    anthropic_event(r, "ping", "{\"type\":\"ping\"}", 15);
}

static void anthropic_piece(const sl_mock_call *c, sl_http_req *r, int i)
{
    char ev[256];
    int n;
    if (c->tool)
        n = snprintf(ev, sizeof(ev),
                     "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
                     "{\"type\":\"input_json_delta\",\"partial_json\":\"%s\"}}",
                     arg_pieces[i % NARGS]);
    else
        n = snprintf(ev, sizeof(ev),
                     "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
                     "{\"type\":\"text_delta\",\"text\":\"%s\"}}",
                     words[i % NWORDS]);
    anthropic_event(r, "content_block_delta", ev, fit(n, sizeof(ev)));
}

static void anthropic_close(const sl_mock_call *c, sl_http_req *r)
{
    static const char stop[] = "{\"type\":\"content_block_stop\",\"index\":0}";
    anthropic_event(r, "content_block_stop", stop, sizeof(stop) - 1);
    char ev[256];
    int n = snprintf(ev, sizeof(ev),
                     "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
                     "\"%s\",\"stop_sequence\":null},\"usage\":{"
                     "\"output_tokens\":%d}}",
                     anthropic_stop(c), out_tokens(c));
    anthropic_event(r, "message_delta", ev, fit(n, sizeof(ev)));
    anthropic_event(r, "message_stop", "{\"type\":\"message_stop\"}", 23);
}

/* ---- Google Gemini ---- */

/* A GenerateContentResponse under x-mock-content-filter: the prompt
 * blocked (promptFeedback, no candidates), or the last chunk's ratings
 * flagging c->filter with finishReason SAFETY. */
static size_t gemini_flagged_response(const sl_mock_call *c, char *out,
                                      size_t cap, const char *text, int last,
                                      int out_so_far)
{
    sl_buf rb;
    sl_buf_init(&rb, NULL);
    gemini_flagged_ratings(c, &rb);
    int rn = rb.data ? (int)rb.len : 2;
    const char *ratings = rb.data ? rb.data : "[]";
    int n;
    if (c->filter_prompt)
        n = snprintf(out, cap,
                     "{\"promptFeedback\":{\"blockReason\":\"SAFETY\","
                     "\"safetyRatings\":%.*s},\"usageMetadata\":{"
                     "\"promptTokenCount\":%d,\"totalTokenCount\":%d},"
                     "\"modelVersion\":\"%s\"}",
                     rn, ratings, c->prompt_tokens, c->prompt_tokens, c->model);
    else
        n = snprintf(
            out, cap,
            "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"%s\"}],"
            "\"role\":\"model\"}%s%.*s,\"index\":0}],\"usageMetadata\":{"
            "\"promptTokenCount\":%d,\"candidatesTokenCount\":%d,"
            "\"totalTokenCount\":%d},\"modelVersion\":\"%s\"}",
            text, last ? ",\"finishReason\":\"SAFETY\",\"safetyRatings\":" : "",
            last ? rn : 0, ratings, c->prompt_tokens, out_so_far,
            c->prompt_tokens + out_so_far, c->model);
    sl_buf_release(&rb);
    return fit(n, cap);
}

/* One GenerateContentResponse: a part, and the finish when `last`. */
static size_t gemini_response(const sl_mock_call *c, char *out, size_t cap,
                              const char *text, int last, int out_so_far)
{
    char part[256];
    if (c->filter[0]) /* x-mock-content-filter */
        return gemini_flagged_response(c, out, cap, text, last, out_so_far);
    if (c->tool)
        snprintf(part, sizeof(part),
                 "{\"functionCall\":{\"name\":\"%s\",\"args\":%s}}",
                 c->tool_name, args_object);
    else
        snprintf(part, sizeof(part), "{\"text\":\"%s\"}", text);
    int n = snprintf(
        out, cap,
        "{\"candidates\":[{\"content\":{\"parts\":[%s],\"role\":"
        "\"model\"}%s%s,\"index\":0}],\"usageMetadata\":{"
        "\"promptTokenCount\":%d,\"candidatesTokenCount\":%d,"
        "\"totalTokenCount\":%d},\"modelVersion\":\"%s\"}",
        part, last ? ",\"finishReason\":\"STOP\",\"safetyRatings\":" : "",
        last ? gemini_ratings : "", c->prompt_tokens, out_so_far,
        c->prompt_tokens + out_so_far, c->model);
    return fit(n, cap);
}

static void gemini_answer(const sl_mock_call *c, sl_http_req *r)
{
    char body[1536];
    size_t n =
        gemini_response(c, body, sizeof(body), answer_text, 1, out_tokens(c));
    send_json(r, 200, body, n);
}

static void gemini_chunk(const sl_mock_call *c, sl_http_req *r, int i,
                         const char *text, int last)
{
    char ev[1536];
    int so_far = last ? out_tokens(c) : i + 1;
    size_t n = gemini_response(c, ev, sizeof(ev), text, last, so_far);
    if (c->sse) {
        sse_data(r, ev, n);
        return;
    }
    if (i > 0) /* the elements of one JSON array, as Gemini sends them */
        sl_http_response_body(r, ",\r\n", 3);
    sl_http_response_body(r, ev, n);
}

/* ---- dispatch ---- */

void sl_mock_send_answer(const sl_mock_call *c, sl_http_req *r)
{
    if (c->api == SL_MOCK_ANTHROPIC)
        anthropic_answer(c, r);
    else if (c->api == SL_MOCK_GEMINI)
        gemini_answer(c, r);
    else
        openai_answer(c, r);
}

void sl_mock_stream_open(const sl_mock_call *c, sl_http_req *r)
{
    int array = c->api == SL_MOCK_GEMINI && !c->sse;
    sl_http_response_begin(r, 200);
    if (array)
        sl_http_response_header(r, "content-type", 12, "application/json", 16);
    else
        sl_http_response_header(r, "content-type", 12, "text/event-stream", 17);
    sl_http_response_header(r, "cache-control", 13, "no-cache", 8);
    sl_http_response_head_end(r, -1);
    if (c->api == SL_MOCK_ANTHROPIC)
        anthropic_open(c, r);
    else if (array)
        sl_http_response_body(r, "[", 1);
    else if (c->api != SL_MOCK_GEMINI)
        openai_open(c, r);
}

void sl_mock_stream_piece(const sl_mock_call *c, sl_http_req *r, int i)
{
    if (c->api == SL_MOCK_ANTHROPIC)
        anthropic_piece(c, r, i);
    else if (c->api == SL_MOCK_GEMINI)
        gemini_chunk(c, r, i, words[i % NWORDS], i == c->pieces - 1);
    else
        openai_piece(c, r, i);
}

void sl_mock_stream_close(const sl_mock_call *c, sl_http_req *r)
{
    if (c->api == SL_MOCK_ANTHROPIC) {
        anthropic_close(c, r);
    } else if (c->api == SL_MOCK_GEMINI) {
        if (c->pieces == 0) /* the finish still comes, with no text */
            gemini_chunk(c, r, 0, "", 1);
        if (!c->sse)
            sl_http_response_body(r, "]", 1);
    } else {
        openai_close(c, r);
    }
}
