/* yaml_tree.h — YAML (and JSON) files loaded into a small tree that keeps
 * each node's line, so every configuration error can name file, line and key.
 *
 * The tree owns all its strings; free the root with sl_node_free(). */
#ifndef SL_YAML_TREE_H
#define SL_YAML_TREE_H

#include <stddef.h>

typedef enum { SL_NODE_SCALAR, SL_NODE_MAP, SL_NODE_SEQ } sl_node_type;

typedef struct sl_node {
    sl_node_type type;
    int line;              /* 1-based line of the value in its file */
    int plain;             /* scalar written without quotes (may be a number,
                              bool or null) */
    char *key;             /* the key when the node is a map entry */
    char *value;           /* scalar text, NUL-terminated */
    size_t len;            /* scalar length */
    struct sl_node *child; /* first entry of a map or seq */
    struct sl_node *next;  /* next sibling */
    int n;                 /* number of children */
} sl_node;

/* Load the first document of a YAML or JSON file. An empty file gives an
 * empty map. On error returns SL_ECONFIG with "file:line: reason" in err. */
int sl_yaml_load(const char *path, sl_node **out, char *err, size_t errlen);

void sl_node_free(sl_node *n);

/* The entry `key` of a map node, or NULL. */
const sl_node *sl_node_get(const sl_node *map, const char *key);

/* A plain scalar that YAML would read as null ("~", "null", or empty). */
int sl_node_is_null(const sl_node *n);

#endif
