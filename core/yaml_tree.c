/* yaml_tree.c — libyaml's event stream folded into an sl_node tree.
 *
 * Anchors and aliases are refused: policy files are reviewed by people, and
 * an alias makes one line mean two places. */
#include "yaml_tree.h"
#include "common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <yaml.h>

typedef struct {
    const char *path;
    char *err;
    size_t errlen;
} loader;

static sl_node *node_new(sl_node_type t, int line)
{
    sl_node *n = calloc(1, sizeof(*n));
    if (n) {
        n->type = t;
        n->line = line;
    }
    return n;
}

void sl_node_free(sl_node *n)
{
    while (n) {
        sl_node *next = n->next;
        sl_node_free(n->child);
        free(n->key);
        free(n->value);
        free(n);
        n = next;
    }
}

static int fail(loader *ld, int line, const char *what)
{
    snprintf(ld->err, ld->errlen, "%s:%d: %s", ld->path, line, what);
    return SL_ECONFIG;
}

static int parse_node(loader *ld, yaml_parser_t *p, yaml_event_t *ev,
                      sl_node **out);

static int next_event(loader *ld, yaml_parser_t *p, yaml_event_t *ev)
{
    if (!yaml_parser_parse(p, ev)) {
        char msg[256];
        snprintf(msg, sizeof(msg), "%s",
                 p->problem ? p->problem : "syntax error");
        return fail(ld, (int)p->problem_mark.line + 1, msg);
    }
    return 0;
}

static void append_child(sl_node *parent, sl_node **tail, sl_node *c)
{
    if (*tail)
        (*tail)->next = c;
    else
        parent->child = c;
    *tail = c;
    parent->n++;
}

static int parse_collection(loader *ld, yaml_parser_t *p, sl_node *coll,
                            yaml_event_type_t end)
{
    sl_node *tail = NULL;
    for (;;) {
        yaml_event_t ev;
        if (next_event(ld, p, &ev) < 0)
            return SL_ECONFIG;
        if (ev.type == end) {
            yaml_event_delete(&ev);
            return 0;
        }
        char *key = NULL;
        int key_line = 0;
        if (coll->type == SL_NODE_MAP) {
            if (ev.type != YAML_SCALAR_EVENT) {
                int line = (int)ev.start_mark.line + 1;
                yaml_event_delete(&ev);
                return fail(ld, line, "map keys must be plain strings");
            }
            key = strdup((const char *)ev.data.scalar.value);
            int line = (int)ev.start_mark.line + 1;
            key_line = line;
            yaml_event_delete(&ev);
            if (!key)
                return SL_ENOMEM;
            for (sl_node *c = coll->child; c; c = c->next) {
                if (strcmp(c->key, key) == 0) {
                    char msg[300];
                    snprintf(msg, sizeof(msg), "duplicate key '%s'", key);
                    free(key);
                    return fail(ld, line, msg);
                }
            }
            if (next_event(ld, p, &ev) < 0) {
                free(key);
                return SL_ECONFIG;
            }
        }
        sl_node *child = NULL;
        int rc = parse_node(ld, p, &ev, &child);
        if (rc < 0) {
            free(key);
            return rc;
        }
        child->key = key;
        if (key)
            child->line = key_line; /* errors point at the key's line */
        append_child(coll, &tail, child);
    }
}

/* Consumes *ev (the node's first event). */
static int parse_node(loader *ld, yaml_parser_t *p, yaml_event_t *ev,
                      sl_node **out)
{
    int line = (int)ev->start_mark.line + 1;
    sl_node *n;
    int rc = 0;
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        n = node_new(SL_NODE_SCALAR, line);
        if (!n)
            break;
        n->len = ev->data.scalar.length;
        n->value = malloc(n->len + 1);
        if (!n->value) {
            free(n);
            n = NULL;
            break;
        }
        memcpy(n->value, ev->data.scalar.value, n->len);
        n->value[n->len] = '\0';
        n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        yaml_event_delete(ev);
        *out = n;
        return 0;
    case YAML_MAPPING_START_EVENT:
    case YAML_SEQUENCE_START_EVENT: {
        int is_map = ev->type == YAML_MAPPING_START_EVENT;
        yaml_event_delete(ev);
        n = node_new(is_map ? SL_NODE_MAP : SL_NODE_SEQ, line);
        if (!n)
            return SL_ENOMEM;
        rc = parse_collection(ld, p, n,
                              is_map ? YAML_MAPPING_END_EVENT
                                     : YAML_SEQUENCE_END_EVENT);
        if (rc < 0) {
            sl_node_free(n);
            return rc;
        }
        *out = n;
        return 0;
    }
    case YAML_ALIAS_EVENT:
        yaml_event_delete(ev);
        return fail(ld, line,
                    "YAML aliases are not supported in sluice "
                    "files; write the value out");
    default:
        yaml_event_delete(ev);
        return fail(ld, line, "unexpected YAML event");
    }
    yaml_event_delete(ev);
    return SL_ENOMEM;
}

int sl_yaml_load(const char *path, sl_node **out, char *err, size_t errlen)
{
    loader ld = {path, err, errlen};
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return SL_ECONFIG;
    }
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        fclose(f);
        return SL_ENOMEM;
    }
    yaml_parser_set_input_file(&p, f);
    sl_node *root = NULL;
    int rc = 0;
    for (;;) {
        yaml_event_t ev;
        if ((rc = next_event(&ld, &p, &ev)) < 0)
            break;
        if (ev.type == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        if (ev.type == YAML_STREAM_START_EVENT ||
            ev.type == YAML_DOCUMENT_START_EVENT ||
            ev.type == YAML_DOCUMENT_END_EVENT) {
            yaml_event_delete(&ev);
            continue;
        }
        if (root) { /* a second document */
            int line = (int)ev.start_mark.line + 1;
            yaml_event_delete(&ev);
            rc = fail(&ld, line, "only one YAML document per file");
            break;
        }
        if ((rc = parse_node(&ld, &p, &ev, &root)) < 0)
            break;
    }
    yaml_parser_delete(&p);
    fclose(f);
    if (rc < 0) {
        sl_node_free(root);
        return rc;
    }
    if (!root || sl_node_is_null(root)) {
        sl_node_free(root);
        root = node_new(SL_NODE_MAP, 1);
        if (!root)
            return SL_ENOMEM;
    }
    *out = root;
    return 0;
}

const sl_node *sl_node_get(const sl_node *map, const char *key)
{
    if (!map || map->type != SL_NODE_MAP)
        return NULL;
    for (const sl_node *c = map->child; c; c = c->next)
        if (strcmp(c->key, key) == 0)
            return c;
    return NULL;
}

int sl_node_is_null(const sl_node *n)
{
    return n->type == SL_NODE_SCALAR && n->plain &&
           (n->len == 0 || strcmp(n->value, "~") == 0 ||
            strcmp(n->value, "null") == 0);
}
