/* cluster_config.h — the `cluster:` section of sluice.yaml (the settings
 * themselves are sl_cluster_cfg in config.h). */
#ifndef SL_CLUSTER_CONFIG_H
#define SL_CLUSTER_CONFIG_H

#include "config.h"
#include "config_check.h"

/* Fill `out` from the `cluster:` map `n`: 0, or SL_ECONFIG with
 * "file:line: cluster.key: reason" in the checker. */
int sl_cluster_config_parse(sl_ck *ck, const sl_node *n, sl_cluster_cfg *out);

/* Release what sl_cluster_config_parse allocated. */
void sl_cluster_config_free(sl_cluster_cfg *c);

#endif
