/* test_tls.c — TLS sessions over memory buffers (core/tls.c).
 *
 * A client and a server session talk to each other with nothing between
 * them but this file moving pending ciphertext across, so every behaviour
 * the connection layer relies on (handshake, data both ways, close_notify,
 * verification failures) is checked without sockets. Certificates are made
 * with the openssl CLI in a fresh temporary directory at start. */
#include "common.h"
#include "tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int passed, failed;

#define CHECK(cond, what)                                                      \
    do {                                                                       \
        if (cond) {                                                            \
            passed++;                                                          \
        } else {                                                               \
            failed++;                                                          \
            printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, what);              \
        }                                                                      \
    } while (0)

static char dir[64];

/* The path of `name` inside the temporary directory (static buffer). */
static const char *in_dir(const char *name)
{
    static char paths[4][256];
    static int next;
    char *p = paths[next++ % 4];
    snprintf(p, sizeof(paths[0]), "%s/%s", dir, name);
    return p;
}

static int sh(const char *cmd)
{
    char full[1024];
    snprintf(full, sizeof(full), "cd '%s' && %s >/dev/null 2>&1", dir, cmd);
    if (system(full) != 0) {
        printf("setup command failed: %s\n", cmd);
        return -1;
    }
    return 0;
}

static int write_file(const char *name, const char *text)
{
    FILE *f = fopen(in_dir(name), "w");
    if (!f)
        return -1;
    fputs(text, f);
    return fclose(f);
}

/* A CA, a "localhost" server certificate it signed, and an unrelated
 * self-signed "localhost" certificate that must not be trusted instead. */
static int make_certs(void)
{
    static const char *ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
                            "-nodes";
    char cmd[512];
    if (write_file("server.ext", "subjectAltName=DNS:localhost\n"
                                 "basicConstraints=CA:FALSE\n"
                                 "keyUsage=digitalSignature\n"
                                 "extendedKeyUsage=serverAuth\n") != 0 ||
        write_file("garbage.pem", "this is not a certificate\n") != 0)
        return -1;
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 %s -keyout ca.key -out ca.crt -days 2 "
             "-subj /CN=sluice-test-ca "
             "-addext basicConstraints=critical,CA:TRUE "
             "-addext keyUsage=critical,keyCertSign,cRLSign",
             ec);
    if (sh(cmd) != 0)
        return -1;
    snprintf(cmd, sizeof(cmd),
             "openssl req %s -keyout server.key -out server.csr "
             "-subj /CN=localhost",
             ec);
    if (sh(cmd) != 0)
        return -1;
    if (sh("openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key "
           "-CAcreateserial -days 2 -out server.crt -extfile server.ext") != 0)
        return -1;
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 %s -keyout other.key -out other.crt -days 2 "
             "-subj /CN=localhost -addext subjectAltName=DNS:localhost",
             ec);
    return sh(cmd);
}

/* ---- moving bytes between two sessions ---------------------------------- */

/* Move up to `chunk` pending bytes from one session to the other, handing
 * them over in two feeds when possible so records split anywhere. Returns
 * the bytes moved, or -1 on a feed error. */
static long move_chunk(sl_tls *from, sl_tls *to, size_t chunk)
{
    const char *p;
    size_t n = sl_tls_pending(from, &p);
    if (n > chunk)
        n = chunk;
    if (n == 0)
        return 0;
    size_t half = n / 2;
    if (sl_tls_feed(to, p, half) != 0 ||
        sl_tls_feed(to, p + half, n - half) != 0)
        return -1;
    sl_tls_out_consumed(from, n);
    return (long)n;
}

/* Step both handshakes, moving `chunk` bytes each way between steps, until
 * neither side has anything left to say. */
static void handshake_pair(sl_tls *c, sl_tls *s, size_t chunk, int *crc,
                           int *src)
{
    *crc = *src = SL_EAGAIN;
    for (int i = 0; i < 1000000; i++) {
        if (*crc == SL_EAGAIN)
            *crc = sl_tls_handshake(c);
        if (*src == SL_EAGAIN)
            *src = sl_tls_handshake(s);
        long a = move_chunk(c, s, chunk);
        long b = move_chunk(s, c, chunk);
        if (a < 0 || b < 0)
            return;
        if (a == 0 && b == 0)
            return;
    }
}

typedef struct {
    sl_tls_config *ccfg, *scfg;
    sl_tls *c, *s;
    int crc, src;
} pair;

/* Build both sides and run the handshake; fails only on setup errors. */
static int pair_open(pair *p, const char *cert, const char *key, const char *ca,
                     int verify, const char *host, size_t chunk)
{
    char err[256];
    memset(p, 0, sizeof(*p));
    if (sl_tls_server_config_new(&p->scfg, in_dir(cert), in_dir(key), err,
                                 sizeof(err)) != 0) {
        printf("server config: %s\n", err);
        return -1;
    }
    if (sl_tls_client_config_new(&p->ccfg, in_dir(ca), verify, err,
                                 sizeof(err)) != 0) {
        printf("client config: %s\n", err);
        return -1;
    }
    p->c = sl_tls_new(p->ccfg, host);
    p->s = sl_tls_new(p->scfg, NULL);
    if (!p->c || !p->s)
        return -1;
    handshake_pair(p->c, p->s, chunk, &p->crc, &p->src);
    return 0;
}

static void pair_close(pair *p)
{
    sl_tls_free(p->c);
    sl_tls_free(p->s);
    sl_tls_config_free(p->ccfg);
    sl_tls_config_free(p->scfg);
}

/* Send len bytes from one session and read them at the other, moving at
 * most `chunk` ciphertext bytes at a time and reading into a `rbuf`-byte
 * buffer. Returns 0 when every byte arrived intact and in order. */
static int send_receive(sl_tls *from, sl_tls *to, const char *data, size_t len,
                        size_t chunk, size_t rbuf)
{
    int rc = -1;
    char *got = malloc(len ? len : 1);
    char *buf = malloc(rbuf);
    size_t have = 0;
    if (!got || !buf || sl_tls_write(from, data, len) != 0)
        goto out;
    while (have < len) {
        long moved = move_chunk(from, to, chunk);
        if (moved < 0)
            goto out;
        int r;
        while ((r = sl_tls_read(to, buf, rbuf)) > 0) {
            if (have + (size_t)r > len)
                goto out;
            memcpy(got + have, buf, (size_t)r);
            have += (size_t)r;
        }
        if (r != SL_EAGAIN || (moved == 0 && have < len))
            goto out;
    }
    rc = memcmp(got, data, len) == 0 ? 0 : -1;
out:
    free(got);
    free(buf);
    return rc;
}

/* ---- specs -------------------------------------------------------------- */

static void test_config_errors(void)
{
    sl_tls_config *cfg;
    char err[256];
    int rc;

    rc = sl_tls_server_config_new(&cfg, in_dir("missing.crt"),
                                  in_dir("server.key"), err, sizeof(err));
    CHECK(rc == SL_EIO && !cfg, "a missing certificate file is an I/O error");
    CHECK(strstr(err, "missing.crt") != NULL,
          "the error names the missing certificate file");

    rc = sl_tls_server_config_new(&cfg, in_dir("garbage.pem"),
                                  in_dir("server.key"), err, sizeof(err));
    CHECK(rc == SL_ETLS && strstr(err, "garbage.pem") != NULL,
          "an unparsable certificate is refused with the file named");

    rc = sl_tls_server_config_new(&cfg, in_dir("server.crt"),
                                  in_dir("garbage.pem"), err, sizeof(err));
    CHECK(rc == SL_ETLS && strstr(err, "garbage.pem") != NULL,
          "an unparsable key is refused with the file named");

    rc = sl_tls_server_config_new(&cfg, in_dir("server.crt"),
                                  in_dir("other.key"), err, sizeof(err));
    CHECK(rc == SL_ETLS && strstr(err, "does not match") != NULL,
          "a key that does not match the certificate is refused");

    rc = sl_tls_client_config_new(&cfg, in_dir("missing-ca.crt"), 1, err,
                                  sizeof(err));
    CHECK(rc == SL_EIO && strstr(err, "missing-ca.crt") != NULL,
          "a missing CA file is an I/O error naming the file");

    if (access("/etc/ssl/certs/ca-certificates.crt", R_OK) == 0) {
        rc = sl_tls_client_config_new(&cfg, NULL, 1, err, sizeof(err));
        CHECK(rc == 0, "a client config loads the system CA bundle");
        sl_tls_config_free(cfg);
    }
}

static void test_exchange(void)
{
    pair p;
    char buf[64];
    if (pair_open(&p, "server.crt", "server.key", "ca.crt", 1, "localhost",
                  1 << 20) != 0) {
        CHECK(0, "setting up a verified pair");
        pair_close(&p);
        return;
    }
    CHECK(p.crc == 0 && p.src == 0, "a verified handshake completes");
    if (p.crc != 0)
        printf("  client: %s\n", sl_tls_error(p.c));
    CHECK(sl_tls_handshake(p.c) == 0, "handshake stays complete");
    CHECK(sl_tls_read(p.s, buf, sizeof(buf)) == SL_EAGAIN,
          "reading with nothing buffered asks for more input");
    CHECK(send_receive(p.c, p.s, "hello", 5, 1 << 20, 64) == 0,
          "client to server");
    CHECK(send_receive(p.s, p.c, "world!", 6, 1 << 20, 64) == 0,
          "server to client");
    CHECK(send_receive(p.c, p.s, "", 0, 1 << 20, 64) == 0,
          "an empty write is a no-op");

    size_t big = 1 << 20;
    char *data = malloc(big);
    if (data) {
        for (size_t i = 0; i < big; i++)
            data[i] = (char)(i * 131 + (i >> 11));
        CHECK(send_receive(p.c, p.s, data, big, SIZE_MAX, 16384) == 0,
              "1 MiB client to server, ciphertext fed in one go");
        CHECK(send_receive(p.s, p.c, data, big, 1000, 777) == 0,
              "1 MiB server to client, in 1000-byte pieces");
        free(data);
    }

    CHECK(send_receive(p.s, p.c, "last words", 10, 3, 4) == 0,
          "data written before close_notify arrives first");
    sl_tls_close_notify(p.c);
    move_chunk(p.c, p.s, SIZE_MAX);
    CHECK(sl_tls_read(p.s, buf, sizeof(buf)) == SL_EEOF,
          "close_notify reads as end of stream");
    CHECK(sl_tls_read(p.s, buf, sizeof(buf)) == SL_EEOF,
          "end of stream is sticky");
    sl_tls_close_notify(p.s);
    move_chunk(p.s, p.c, SIZE_MAX);
    CHECK(sl_tls_read(p.c, buf, sizeof(buf)) == SL_EEOF,
          "the server's close_notify reaches the client");
    pair_close(&p);
}

static void test_byte_by_byte(void)
{
    pair p;
    if (pair_open(&p, "server.crt", "server.key", "ca.crt", 1, "localhost",
                  1) == 0) {
        CHECK(p.crc == 0 && p.src == 0,
              "a handshake fed one byte at a time completes");
        CHECK(send_receive(p.c, p.s, "split", 5, 1, 2) == 0,
              "records fed one byte at a time decrypt");
    } else {
        CHECK(0, "setting up a byte-by-byte pair");
    }
    pair_close(&p);
}

static void test_verification(void)
{
    pair p;
    if (pair_open(&p, "server.crt", "server.key", "other.crt", 1, "localhost",
                  1 << 20) == 0) {
        CHECK(p.crc == SL_ETLS, "a server signed by an untrusted CA fails");
        CHECK(strstr(sl_tls_error(p.c), "verification") != NULL,
              "the error says verification failed");
        CHECK(p.src == SL_ETLS,
              "the server learns of the failure from the client's alert");
        CHECK(sl_tls_handshake(p.c) == SL_ETLS, "the failure is sticky");
    } else {
        CHECK(0, "setting up a wrong-CA pair");
    }
    pair_close(&p);

    if (pair_open(&p, "server.crt", "server.key", "ca.crt", 1, "example.com",
                  1 << 20) == 0) {
        CHECK(p.crc == SL_ETLS, "a certificate for another name fails");
        CHECK(strstr(sl_tls_error(p.c), "verification") != NULL,
              "the wrong-name error says verification failed");
    } else {
        CHECK(0, "setting up a wrong-name pair");
    }
    pair_close(&p);

    if (pair_open(&p, "server.crt", "server.key", "other.crt", 0, "localhost",
                  1 << 20) == 0) {
        CHECK(p.crc == 0 && p.src == 0,
              "verify=0 accepts a certificate from an unknown CA");
        CHECK(send_receive(p.c, p.s, "ok", 2, 1 << 20, 64) == 0,
              "an unverified session still carries data");
    } else {
        CHECK(0, "setting up an unverified pair");
    }
    pair_close(&p);

    if (pair_open(&p, "other.crt", "other.key", "other.crt", 1, "localhost",
                  1 << 20) == 0) {
        CHECK(p.crc == 0 && p.src == 0,
              "a self-signed certificate verifies when it is the CA");
    } else {
        CHECK(0, "setting up a self-signed pair");
    }
    pair_close(&p);
}

static void test_misuse(void)
{
    sl_tls_config *cfg;
    char err[256], buf[16];
    if (sl_tls_server_config_new(&cfg, in_dir("server.crt"),
                                 in_dir("server.key"), err, sizeof(err)) != 0) {
        CHECK(0, err);
        return;
    }
    sl_tls *s = sl_tls_new(cfg, NULL);
    CHECK(s != NULL, "a server session is created");
    if (s) {
        CHECK(strlen(sl_tls_error(s)) > 0, "error text exists before errors");
        CHECK(sl_tls_write(s, "x", 1) != 0,
              "writing before the handshake is refused");
        static const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        CHECK(sl_tls_feed(s, junk, sizeof(junk) - 1) == 0, "feed copies");
        CHECK(sl_tls_read(s, buf, sizeof(buf)) == SL_ETLS,
              "plain HTTP on a TLS listener is a TLS error");
        CHECK(strlen(sl_tls_error(s)) > 0 &&
                  strcmp(sl_tls_error(s), "no TLS error") != 0,
              "the TLS error has a reason");
        sl_tls_close_notify(s);
        sl_tls_free(s);
    }
    sl_tls_config_free(cfg);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "/tmp/sluice-tls-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    if (make_certs() == 0) {
        test_config_errors();
        test_exchange();
        test_byte_by_byte();
        test_verification();
        test_misuse();
    } else {
        failed++;
    }
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        printf("could not remove %s\n", dir);
    printf("test_tls: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
