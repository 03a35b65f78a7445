/* listen_port.h — is a listening port this process's alone?
 *
 * Every listener sets SO_REUSEPORT so that each worker has its own accept
 * queue. The kernel then also lets any other process of the same user bind
 * the same address and port, and splits new connections between the two
 * without a word: a second gateway, a stale instance, a test's mock. A
 * listener is checked once bound, and refused when another process already
 * listens there. */
#ifndef SL_LISTEN_PORT_H
#define SL_LISTEN_PORT_H

#include <stddef.h>

/* 0 when no socket of another process listens on listening socket fd's
 * port at an address that overlaps fd's (the same address, or either one
 * the wildcard); SL_EIO with the reason in err when one does. When
 * /proc/net cannot be read the check is skipped (0). */
int sl_listen_port_owned(int fd, char *err, size_t errlen);

#endif
