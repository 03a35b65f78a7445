/* mock_read.c — what the mock provider understood of a call: model,
 * stream, tool to call, prompt size, content-filter switch (see
 * mock_providers.h); mock_providers.c writes the answer. */
#include "mock_providers.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static void copy_safe(char *dst, size_t cap, const char *s, size_t n)
{
    /* Names go into JSON we print: keep them to safe characters. */
    size_t o = 0;
    for (size_t i = 0; i < n && o < cap - 1; i++)
        if (s[i] != '"' && s[i] != '\\' && (unsigned char)s[i] >= 0x20)
            dst[o++] = s[i];
    dst[o] = '\0';
}

static const cJSON *get(const cJSON *j, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(j, key);
}

/* Bytes of prompt text under a node: strings, and the "text", "content"
 * and "parts" of objects — OpenAI messages, Anthropic blocks and Gemini
 * parts alike. Role names and other fields do not count. */
static size_t text_bytes(const cJSON *n, int depth)
{
    if (!n || depth > 16)
        return 0;
    int type = n->type & 0xff; /* inline cJSON_Is*: this runs per request */
    if (type == cJSON_String)
        return strlen(n->valuestring);
    if (type != cJSON_Object && type != cJSON_Array)
        return 0;
    size_t t = 0;
    /* One pass over the members: three lookups would cost more. */
    for (const cJSON *e = n->child; e; e = e->next) {
        const char *k = e->string;
        if (type == cJSON_Array ||
            (k && ((k[0] == 't' && strcmp(k, "text") == 0) ||
                   (k[0] == 'c' && strcmp(k, "content") == 0) ||
                   (k[0] == 'p' && strcmp(k, "parts") == 0))))
            t += text_bytes(e, depth + 1);
    }
    return t;
}

static const cJSON *last_item(const cJSON *a)
{
    const cJSON *e = a ? a->child : NULL;
    while (e && e->next)
        e = e->next;
    return e;
}

/* The top-level members the mock reads, found in one pass: a lookup per
 * member would walk the object each time, on the benchmarks' path. */
typedef struct fields {
    const cJSON *model, *stream, *stream_options, *messages, *tools,
        *tool_choice, *system, *system_instruction, *contents, *input;
} fields;

static void take(const cJSON **slot, const cJSON *e, const char *k,
                 const char *name)
{
    if (!*slot && strcmp(k, name) == 0)
        *slot = e;
}

static void scan(const cJSON *j, fields *f)
{
    for (const cJSON *e = j->child; e; e = e->next) {
        const char *k = e->string;
        switch (k ? k[0] : 0) {
        case 'm':
            take(&f->model, e, k, "model");
            take(&f->messages, e, k, "messages");
            break;
        case 's':
            take(&f->stream, e, k, "stream");
            take(&f->stream_options, e, k, "stream_options");
            take(&f->system, e, k, "system");
            take(&f->system_instruction, e, k, "systemInstruction");
            break;
        case 't':
            take(&f->tools, e, k, "tools");
            take(&f->tool_choice, e, k, "tool_choice");
            break;
        case 'c':
            take(&f->contents, e, k, "contents");
            break;
        case 'i':
            take(&f->input, e, k, "input");
            break;
        }
    }
}

/* Does a message/content carry a tool result (Anthropic tool_result
 * block, Gemini functionResponse part)? */
static int has_tool_result(const cJSON *parts)
{
    const cJSON *p;
    cJSON_ArrayForEach(p, parts)
    {
        const cJSON *type = get(p, "type");
        if (get(p, "functionResponse") ||
            (cJSON_IsString(type) &&
             strcmp(type->valuestring, "tool_result") == 0))
            return 1;
    }
    return 0;
}

static int role_is(const cJSON *msg, const char *role)
{
    const cJSON *r = get(msg, "role");
    return cJSON_IsString(r) && strcmp(r->valuestring, role) == 0;
}

/* The first tool's name when the model should call it now: tools were
 * offered and the last turn is the user's, not a tool result. */
static const char *tool_to_call(const sl_mock_call *c, const fields *f)
{
    const cJSON *first = cJSON_GetArrayItem(f->tools, 0), *name, *last;
    if (!first)
        return NULL;
    switch (c->api) {
    case SL_MOCK_OPENAI:
    case SL_MOCK_AZURE:
        if (cJSON_IsString(f->tool_choice) &&
            strcmp(f->tool_choice->valuestring, "none") == 0)
            return NULL;
        name = get(get(first, "function"), "name");
        last = last_item(f->messages);
        if (!role_is(last, "user"))
            return NULL;
        break;
    case SL_MOCK_ANTHROPIC:
        name = get(first, "name");
        last = last_item(f->messages);
        if (!role_is(last, "user") || has_tool_result(get(last, "content")))
            return NULL;
        break;
    default: /* Gemini: a user turn may have no role */
        name = get(cJSON_GetArrayItem(get(first, "functionDeclarations"), 0),
                   "name");
        last = last_item(f->contents);
        if (!last || (get(last, "role") && !role_is(last, "user")) ||
            has_tool_result(get(last, "parts")))
            return NULL;
        break;
    }
    return cJSON_IsString(name) ? name->valuestring : NULL;
}

static size_t prompt_bytes(const sl_mock_call *c, const fields *f)
{
    switch (c->api) {
    case SL_MOCK_ANTHROPIC:
        return text_bytes(f->system, 0) + text_bytes(f->messages, 0);
    case SL_MOCK_GEMINI:
        return text_bytes(f->system_instruction, 0) +
               text_bytes(f->contents, 0);
    default:
        return text_bytes(c->embeddings ? f->input : f->messages, 0);
    }
}

/* x-mock-content-filter: CATEGORY or prompt:CATEGORY (see the header). */
static void read_filter(sl_mock_call *c, const sl_http_req *r)
{
    const sl_str *v = sl_http_header(r, "x-mock-content-filter");
    size_t i = 0, o = 0;
    c->filter[0] = '\0';
    c->filter_prompt = 0;
    if (!v)
        return;
    if (v->n > 7 && memcmp(v->p, "prompt:", 7) == 0) {
        c->filter_prompt = 1;
        i = 7;
    }
    for (; i < v->n && o < sizeof(c->filter) - 1; i++) {
        char ch = v->p[i];
        if ((ch >= 'a' && ch <= 'z') || ch == '_')
            c->filter[o++] = ch;
        else if (ch >= 'A' && ch <= 'Z')
            c->filter[o++] = (char)(ch - 'A' + 'a');
    }
    c->filter[o] = '\0';
    if (!o)
        c->filter_prompt = 0;
}

void sl_mock_read_call(sl_mock_call *c, const sl_http_req *r, int chunks)
{
    size_t bytes = 0;
    read_filter(c, r);
    cJSON *j = cJSON_ParseWithLength(r->body.data, r->body.len);
    if (j) {
        fields f = {0};
        scan(j, &f);
        if (!c->model[0] && cJSON_IsString(f.model))
            copy_safe(c->model, sizeof(c->model), f.model->valuestring,
                      strlen(f.model->valuestring));
        if (c->api != SL_MOCK_GEMINI && !c->embeddings)
            c->stream = cJSON_IsTrue(f.stream);
        c->include_usage = cJSON_IsTrue(get(f.stream_options, "include_usage"));
        bytes = prompt_bytes(c, &f);
        const char *tool = c->embeddings ? NULL : tool_to_call(c, &f);
        if (tool) {
            c->tool = 1;
            copy_safe(c->tool_name, sizeof(c->tool_name), tool, strlen(tool));
        }
        cJSON_Delete(j);
    }
    if (!c->model[0])
        snprintf(c->model, sizeof(c->model), "%s",
                 c->embeddings ? "mock-embedding" : "mock-model");
    c->prompt_tokens = bytes ? (int)((bytes + 3) / 4) : 1;
    if (c->filter_prompt && c->api == SL_MOCK_GEMINI)
        c->pieces = 0; /* a blocked prompt gets no content at all */
    else if (c->tool)  /* Gemini sends a function call whole */
        c->pieces = c->api == SL_MOCK_GEMINI ? 1 : SL_MOCK_ARG_PIECES;
    else
        c->pieces = chunks >= 0 ? chunks : SL_MOCK_WORDS;
}
