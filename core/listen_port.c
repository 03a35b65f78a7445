/* listen_port.c — see listen_port.h.
 *
 * Linux lists every TCP socket in /proc/net/tcp and /proc/net/tcp6 with
 * its local address, state and inode, and a process's own sockets appear
 * as "socket:[inode]" links under /proc/self/fd (worker threads share the
 * table). A listening socket on our port whose inode is not among ours
 * belongs to another process. Run once per listener at start-up, so the
 * cost of reading these files does not matter. */
#include "listen_port.h"

#include "common.h"

#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define TCP_LISTEN 0x0A /* include/net/tcp_states.h: TCP_LISTEN */

/* Whether inode is one of this process's sockets. */
static int is_ours(unsigned long inode)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 1; /* cannot tell: do not refuse */
    char want[48], path[300], link[64];
    snprintf(want, sizeof(want), "socket:[%lu]", inode);
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(path, link, sizeof(link) - 1);
        if (n > 0) {
            link[n] = '\0';
            found = strcmp(link, want) == 0;
        }
    }
    closedir(d);
    return found;
}

static int all_zero(const char *hex)
{
    for (; *hex; hex++)
        if (*hex != '0')
            return 0;
    return 1;
}

/* The first inode in `table` (a /proc/net/tcp* file) of a socket of
 * another process listening on `port` at an address overlapping `addr`
 * (hex as the file writes it; "" matches only the wildcard); 0 if none,
 * or if the file cannot be read. */
static unsigned long other_listener(const char *table, unsigned port,
                                    const char *addr, unsigned long self)
{
    FILE *f = fopen(table, "r");
    if (!f)
        return 0;
    char line[512];
    unsigned long found = 0;
    if (!fgets(line, sizeof(line), f)) { /* the header line */
        fclose(f);
        return 0;
    }
    while (!found && fgets(line, sizeof(line), f)) {
        char local[64];
        unsigned lport, state;
        unsigned long inode;
        /* sl local_address rem_address st tx:rx tr:when retrnsmt uid
         * timeout inode */
        if (sscanf(line,
                   " %*s %63[0-9A-Fa-f]:%x %*s %x %*s %*s %*s %*s %*s %lu",
                   local, &lport, &state, &inode) != 4)
            continue;
        if (state != TCP_LISTEN || lport != port || inode == self || inode == 0)
            continue;
        int overlap = all_zero(local) ||
                      (addr[0] && (all_zero(addr) || strcmp(local, addr) == 0));
        if (overlap && !is_ours(inode))
            found = inode;
    }
    fclose(f);
    return found;
}

int sl_listen_port_owned(int fd, char *err, size_t errlen)
{
    struct sockaddr_storage sa;
    socklen_t len = sizeof(sa);
    struct stat st;
    if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0 || fstat(fd, &st) < 0)
        return 0;
    unsigned port;
    char v4[16] = "", v6[40] = "";
    if (sa.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&sa;
        port = ntohs(a->sin_port);
        /* the file prints the address as one host-order 32-bit word */
        snprintf(v4, sizeof(v4), "%08X", (unsigned)a->sin_addr.s_addr);
    } else if (sa.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&sa;
        port = ntohs(a->sin6_port);
        const unsigned char *b = a->sin6_addr.s6_addr;
        for (int w = 0; w < 4; w++) { /* four host-order 32-bit words */
            unsigned x;
            memcpy(&x, b + 4 * w, 4);
            snprintf(v6 + 8 * w, 9, "%08X", x);
        }
        if (all_zero(v6)) /* the IPv6 wildcard takes IPv4 too */
            snprintf(v4, sizeof(v4), "%08X", 0u);
    } else {
        return 0;
    }
    unsigned long self = (unsigned long)st.st_ino;
    /* an IPv4 listener overlaps an IPv6 wildcard (dual-stack), and back */
    unsigned long other = other_listener("/proc/net/tcp", port, v4, self);
    if (!other)
        other = other_listener("/proc/net/tcp6", port, v6, self);
    if (!other)
        return 0;
    snprintf(err, errlen,
             "address already in use: another process listens on port %u "
             "(socket inode %lu), and sluice does not share a port",
             port, other);
    return SL_EIO;
}
