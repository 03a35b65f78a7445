/* tls.c — TLS sessions over memory buffers (mbedTLS), see tls.h.
 *
 * mbedTLS reads from and writes to two byte queues instead of a socket: the
 * connection layer feeds ciphertext in with sl_tls_feed() and drains what the
 * session produced with sl_tls_pending()/sl_tls_out_consumed(). Nothing here
 * blocks or knows about the event loop, so plain TCP and TLS share one
 * connection path.
 *
 * Each config owns its entropy source and DRBG: a config belongs to one
 * worker thread, and so do the sessions made from it. */
#include "tls.h"
#include "common.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/bignum.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#define SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"

/* A queue that grew past this during a burst is freed once it drains, so an
 * idle connection does not keep a megabyte of buffer around. */
#define QUEUE_KEEP_MAX (64 * 1024)

struct sl_tls_config {
    mbedtls_ssl_config conf;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_x509_crt certs; /* our chain (server) or trust anchors (client) */
    mbedtls_pk_context key; /* server only */
    int is_server;
};

/* Live bytes are data[off, len). Consuming only advances off; the prefix is
 * reclaimed when it passes half the buffer, so each byte moves O(1) times
 * however large the stream. */
typedef struct {
    char *data;
    size_t off;
    size_t len;
    size_t cap;
} queue;

struct sl_tls {
    mbedtls_ssl_context ssl;
    queue in;  /* ciphertext from the peer, not yet parsed by mbedTLS */
    queue out; /* ciphertext for the peer, not yet handed to the socket */
    int handshake_done;
    int failed; /* 0, or the SL_E* code every later call returns */
    int eof;    /* the peer sent close_notify */
    char err[320];
};

/* ---- byte queues -------------------------------------------------------- */

static size_t queue_size(const queue *q)
{
    return q->len - q->off;
}

static void queue_free(queue *q)
{
    free(q->data);
    q->data = NULL;
    q->off = q->len = q->cap = 0;
}

static int queue_push(queue *q, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (q->off == q->len) {
        q->off = q->len = 0;
    } else if (q->off > q->cap / 2) {
        memmove(q->data, q->data + q->off, q->len - q->off);
        q->len -= q->off;
        q->off = 0;
    }
    if (q->cap - q->len < n) {
        if (n > SIZE_MAX / 2 - q->len)
            return SL_ENOMEM;
        size_t cap = q->cap ? q->cap : 4096;
        while (cap < q->len + n)
            cap *= 2;
        char *d = realloc(q->data, cap);
        if (!d)
            return SL_ENOMEM;
        q->data = d;
        q->cap = cap;
    }
    memcpy(q->data + q->len, p, n);
    q->len += n;
    return 0;
}

static void queue_pop(queue *q, size_t n)
{
    size_t live = queue_size(q);
    q->off += n < live ? n : live;
    if (q->off == q->len) {
        if (q->cap > QUEUE_KEEP_MAX)
            queue_free(q);
        q->off = q->len = 0;
    }
}

/* ---- mbedTLS transport callbacks ---------------------------------------- */

static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
    sl_tls *s = ctx;
    if (len > INT_MAX)
        len = INT_MAX;
    if (queue_push(&s->out, buf, len) < 0)
        return MBEDTLS_ERR_SSL_ALLOC_FAILED;
    return (int)len;
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
    sl_tls *s = ctx;
    size_t avail = queue_size(&s->in);
    if (avail == 0)
        return MBEDTLS_ERR_SSL_WANT_READ;
    if (len > avail)
        len = avail;
    if (len > INT_MAX)
        len = INT_MAX;
    memcpy(buf, s->in.data + s->in.off, len);
    queue_pop(&s->in, len);
    return (int)len;
}

/* ---- errors ------------------------------------------------------------- */

/* mbedTLS may add a low-level code (bignum) to a high-level one, so the
 * bignum case is matched on the low bits only. */
static int is_alloc_failure(int ret)
{
    return ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ||
           ret == MBEDTLS_ERR_X509_ALLOC_FAILED ||
           ret == MBEDTLS_ERR_PK_ALLOC_FAILED ||
           (ret < 0 && ((-ret) & 0x7F) == -MBEDTLS_ERR_MPI_ALLOC_FAILED);
}

static int is_file_error(int ret)
{
    return ret == MBEDTLS_ERR_PK_FILE_IO_ERROR ||
           ret == MBEDTLS_ERR_X509_FILE_IO_ERROR;
}

/* Write "<what> <file>: <reason>" to err and pick the code a caller can act
 * on: unreadable file, out of memory, or material mbedTLS rejected. errno
 * is only trusted for file errors, and callers clear it beforehand. */
static int config_error(char *err, size_t errlen, int ret, const char *what,
                        const char *file)
{
    char reason[160];
    int code = SL_ETLS;
    if (is_file_error(ret) && errno != 0) {
        snprintf(reason, sizeof(reason), "%s", strerror(errno));
        code = SL_EIO;
    } else {
        mbedtls_strerror(ret, reason, sizeof(reason));
        if (is_file_error(ret))
            code = SL_EIO;
        else if (is_alloc_failure(ret))
            code = SL_ENOMEM;
    }
    snprintf(err, errlen, "%s%s%s: %s", what, file ? " " : "", file ? file : "",
             reason);
    return code;
}

/* Verification flags come as one line per problem; logs want one line. */
static void set_verify_error(sl_tls *s)
{
    char info[512];
    uint32_t flags = mbedtls_ssl_get_verify_result(&s->ssl);
    if (mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags) <= 0)
        snprintf(info, sizeof(info), "unknown reason (flags 0x%08x)",
                 (unsigned)flags);
    size_t n = (size_t)snprintf(s->err, sizeof(s->err),
                                "certificate verification failed: ");
    for (const char *p = info; *p && n + 3 < sizeof(s->err); p++) {
        if (*p != '\n') {
            s->err[n++] = *p;
        } else if (p[1]) {
            s->err[n++] = ';';
            s->err[n++] = ' ';
        }
    }
    s->err[n] = '\0';
}

/* mbedTLS forbids using a context after a fatal error, so the session
 * remembers the failure and keeps returning it. */
static int session_fail(sl_tls *s, const char *what, int ret)
{
    if (ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
        set_verify_error(s);
    } else {
        char reason[160];
        mbedtls_strerror(ret, reason, sizeof(reason));
        snprintf(s->err, sizeof(s->err), "%s: %s", what, reason);
    }
    s->failed = is_alloc_failure(ret) ? SL_ENOMEM : SL_ETLS;
    return s->failed;
}

/* ---- configs ------------------------------------------------------------ */

/* Everything is initialised before anything can fail, so
 * sl_tls_config_free() is safe on a half-built config, which *out holds
 * even on failure (NULL only when the allocation itself failed). */
static int config_new(sl_tls_config **out, int endpoint, char *err,
                      size_t errlen)
{
    static const char pers[] = "sluice-tls";
    sl_tls_config *cfg = calloc(1, sizeof(*cfg));
    *out = cfg;
    if (!cfg) {
        snprintf(err, errlen, "out of memory creating TLS config");
        return SL_ENOMEM;
    }
    mbedtls_ssl_config_init(&cfg->conf);
    mbedtls_entropy_init(&cfg->entropy);
    mbedtls_ctr_drbg_init(&cfg->drbg);
    mbedtls_x509_crt_init(&cfg->certs);
    mbedtls_pk_init(&cfg->key);
    cfg->is_server = endpoint == MBEDTLS_SSL_IS_SERVER;

    int ret =
        mbedtls_ctr_drbg_seed(&cfg->drbg, mbedtls_entropy_func, &cfg->entropy,
                              (const unsigned char *)pers, sizeof(pers) - 1);
    if (ret != 0)
        return config_error(err, errlen, ret,
                            "cannot seed the TLS random generator", NULL);
    ret = mbedtls_ssl_config_defaults(&cfg->conf, endpoint,
                                      MBEDTLS_SSL_TRANSPORT_STREAM,
                                      MBEDTLS_SSL_PRESET_DEFAULT);
    if (ret != 0)
        return config_error(err, errlen, ret, "cannot set TLS defaults", NULL);
    mbedtls_ssl_conf_rng(&cfg->conf, mbedtls_ctr_drbg_random, &cfg->drbg);
    mbedtls_ssl_conf_min_version(&cfg->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3); /* TLS 1.2 */
#if defined(MBEDTLS_SSL_RENEGOTIATION)
    /* Renegotiation would make a write wait for input, which the memory
     * transport cannot express; peers asking for it get a no_renegotiation
     * warning alert. */
    mbedtls_ssl_conf_renegotiation(&cfg->conf,
                                   MBEDTLS_SSL_RENEGOTIATION_DISABLED);
#endif
    return 0;
}

static int load_server_identity(sl_tls_config *cfg, const char *cert_file,
                                const char *key_file, char *err, size_t errlen)
{
    errno = 0;
    int ret = mbedtls_x509_crt_parse_file(&cfg->certs, cert_file);
    if (ret < 0)
        return config_error(err, errlen, ret,
                            "cannot load certificate chain from", cert_file);
    if (ret > 0) {
        /* A chain with a hole would fail at every client; refuse it now. */
        snprintf(err, errlen,
                 "cannot load certificate chain from %s: "
                 "%d certificate(s) in it could not be parsed",
                 cert_file, ret);
        return SL_ETLS;
    }
    errno = 0;
    ret = mbedtls_pk_parse_keyfile(&cfg->key, key_file, NULL);
    if (ret != 0)
        return config_error(err, errlen, ret, "cannot load private key from",
                            key_file);
    ret = mbedtls_pk_check_pair(&cfg->certs.pk, &cfg->key);
    if (ret != 0) {
        snprintf(err, errlen, "private key %s does not match certificate %s",
                 key_file, cert_file);
        return is_alloc_failure(ret) ? SL_ENOMEM : SL_ETLS;
    }
    ret = mbedtls_ssl_conf_own_cert(&cfg->conf, &cfg->certs, &cfg->key);
    if (ret != 0)
        return config_error(err, errlen, ret, "cannot use certificate",
                            cert_file);
    mbedtls_ssl_conf_authmode(&cfg->conf, MBEDTLS_SSL_VERIFY_NONE);
    return 0;
}

static int load_trust(sl_tls_config *cfg, const char *ca_file, int verify,
                      char *err, size_t errlen)
{
    if (!verify) {
        /* Nothing would consult the CAs, so don't pay to parse them. */
        mbedtls_ssl_conf_authmode(&cfg->conf, MBEDTLS_SSL_VERIFY_NONE);
        return 0;
    }
    const char *file = ca_file ? ca_file : SYSTEM_CA_BUNDLE;
    errno = 0;
    int ret = mbedtls_x509_crt_parse_file(&cfg->certs, file);
    if (ret < 0)
        return config_error(err, errlen, ret,
                            "cannot load CA certificates from", file);
    /* A system bundle may hold certificates mbedTLS cannot parse (ret > 0);
     * the rest still anchor verification, as long as there is one. */
    if (cfg->certs.version == 0) {
        snprintf(err, errlen, "no usable CA certificate in %s", file);
        return SL_ETLS;
    }
    mbedtls_ssl_conf_ca_chain(&cfg->conf, &cfg->certs, NULL);
    mbedtls_ssl_conf_authmode(&cfg->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    return 0;
}

int sl_tls_server_config_new(sl_tls_config **out, const char *cert_file,
                             const char *key_file, char *err, size_t errlen)
{
    *out = NULL;
    if (!cert_file || !key_file) {
        snprintf(err, errlen, "TLS listener needs a certificate and a key");
        return SL_EINVAL;
    }
    sl_tls_config *cfg;
    int rc = config_new(&cfg, MBEDTLS_SSL_IS_SERVER, err, errlen);
    if (rc == 0)
        rc = load_server_identity(cfg, cert_file, key_file, err, errlen);
    if (rc < 0) {
        sl_tls_config_free(cfg);
        return rc;
    }
    *out = cfg;
    return 0;
}

int sl_tls_client_config_new(sl_tls_config **out, const char *ca_file,
                             int verify, char *err, size_t errlen)
{
    *out = NULL;
    sl_tls_config *cfg;
    int rc = config_new(&cfg, MBEDTLS_SSL_IS_CLIENT, err, errlen);
    if (rc == 0)
        rc = load_trust(cfg, ca_file, verify, err, errlen);
    if (rc < 0) {
        sl_tls_config_free(cfg);
        return rc;
    }
    *out = cfg;
    return 0;
}

void sl_tls_config_free(sl_tls_config *cfg)
{
    if (!cfg)
        return;
    mbedtls_ssl_config_free(&cfg->conf);
    mbedtls_x509_crt_free(&cfg->certs);
    mbedtls_pk_free(&cfg->key);
    mbedtls_ctr_drbg_free(&cfg->drbg);
    mbedtls_entropy_free(&cfg->entropy);
    free(cfg);
}

/* ---- sessions ----------------------------------------------------------- */

sl_tls *sl_tls_new(sl_tls_config *cfg, const char *hostname)
{
    sl_tls *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    mbedtls_ssl_init(&s->ssl);
    if (mbedtls_ssl_setup(&s->ssl, &cfg->conf) != 0)
        goto fail;
    /* Sets both SNI and the name checked against the peer certificate. */
    if (!cfg->is_server && hostname &&
        mbedtls_ssl_set_hostname(&s->ssl, hostname) != 0)
        goto fail;
    mbedtls_ssl_set_bio(&s->ssl, s, bio_send, bio_recv, NULL);
    return s;
fail:
    mbedtls_ssl_free(&s->ssl);
    free(s);
    return NULL;
}

void sl_tls_free(sl_tls *s)
{
    if (!s)
        return;
    mbedtls_ssl_free(&s->ssl);
    queue_free(&s->in);
    queue_free(&s->out);
    free(s);
}

int sl_tls_feed(sl_tls *s, const char *data, size_t len)
{
    if (queue_push(&s->in, data, len) < 0) {
        snprintf(s->err, sizeof(s->err), "out of memory buffering TLS input");
        return SL_ENOMEM;
    }
    return 0;
}

int sl_tls_handshake(sl_tls *s)
{
    if (s->failed)
        return s->failed;
    if (s->handshake_done)
        return 0;
    int ret = mbedtls_ssl_handshake(&s->ssl);
    if (ret == 0) {
        s->handshake_done = 1;
        return 0;
    }
    if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
        return SL_EAGAIN;
    return session_fail(s, "TLS handshake failed", ret);
}

int sl_tls_read(sl_tls *s, char *buf, size_t len)
{
    if (s->failed)
        return s->failed;
    if (s->eof)
        return SL_EEOF;
    if (len == 0)
        return SL_EINVAL;
    /* Finish the handshake here so its errors read the same either way. */
    int rc = sl_tls_handshake(s);
    if (rc != 0)
        return rc;
    int ret = mbedtls_ssl_read(&s->ssl, (unsigned char *)buf, len);
    if (ret > 0)
        return ret;
    if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
        return SL_EAGAIN;
    if (ret == 0 || ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
        s->eof = 1;
        return SL_EEOF;
    }
    return session_fail(s, "TLS read failed", ret);
}

int sl_tls_write(sl_tls *s, const char *data, size_t len)
{
    if (s->failed)
        return s->failed;
    if (!s->handshake_done) {
        snprintf(s->err, sizeof(s->err),
                 "TLS write before the handshake completed");
        return SL_EINVAL;
    }
    const unsigned char *p = (const unsigned char *)data;
    while (len > 0) {
        /* mbedTLS takes at most one record per call. Output lands in
         * memory and renegotiation is off, so neither WANT_WRITE nor
         * WANT_READ can happen here: anything but progress is fatal. */
        int ret = mbedtls_ssl_write(&s->ssl, p, len);
        if (ret <= 0)
            return session_fail(s, "TLS write failed",
                                ret ? ret : MBEDTLS_ERR_SSL_INTERNAL_ERROR);
        p += ret;
        len -= (size_t)ret;
    }
    return 0;
}

void sl_tls_close_notify(sl_tls *s)
{
    /* Before the handshake there is no session to close; after a failure
     * mbedTLS must not be touched. The alert is best effort: the caller
     * closes the socket either way. */
    if (s->failed || !s->handshake_done)
        return;
    (void)mbedtls_ssl_close_notify(&s->ssl);
}

size_t sl_tls_pending(sl_tls *s, const char **data)
{
    *data = s->out.data ? s->out.data + s->out.off : NULL;
    return queue_size(&s->out);
}

void sl_tls_out_consumed(sl_tls *s, size_t n)
{
    queue_pop(&s->out, n);
}

const char *sl_tls_error(sl_tls *s)
{
    return s->err[0] ? s->err : "no TLS error";
}
