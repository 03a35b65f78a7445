/* test_shdict.c — the shared dictionary: exact counters under concurrent
 * incr, TTL expiry on the monotonic clock, add semantics, and a full
 * dictionary refusing writes instead of evicting live entries. */
#include "shdict.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int passed, failed;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (cond) {                                                            \
            passed++;                                                          \
        } else {                                                               \
            failed++;                                                          \
            fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                      \
    } while (0)

#define K(s) (s), strlen(s)

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static sl_shd_value num(double n)
{
    sl_shd_value v = {.type = SL_SHD_NUMBER, .num = n};
    return v;
}

static sl_shd_value str(const char *s)
{
    sl_shd_value v = {.type = SL_SHD_STRING, .str = s, .len = strlen(s)};
    return v;
}

#define THREADS 4
#define ITERS 100000

static void *incr_worker(void *arg)
{
    sl_shdict *d = arg;
    double out;
    for (int i = 0; i < ITERS; i++) {
        if (sl_shdict_incr(d, K("hits"), 1, 0, 0, &out) != 0)
            return (void *)1;
        /* a second key per thread keeps other shards busy too */
        char k[16];
        snprintf(k, sizeof(k), "t%d", i & 7);
        sl_shdict_incr(d, K(k), 1, 0, 0, &out);
    }
    return NULL;
}

static void test_concurrent_incr(void)
{
    sl_shdict *d = sl_shdict_new(1000);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, incr_worker, d);
    int errors = 0;
    for (int i = 0; i < THREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        errors += r != NULL;
    }
    CHECK(errors == 0);
    sl_shd_value v;
    CHECK(sl_shdict_get(d, K("hits"), &v, NULL) == 1);
    CHECK(v.type == SL_SHD_NUMBER && v.num == (double)THREADS * ITERS);
    double sum = 0;
    for (int i = 0; i < 8; i++) {
        char k[16];
        snprintf(k, sizeof(k), "t%d", i);
        sl_shdict_get(d, K(k), &v, NULL);
        sum += v.num;
    }
    CHECK(sum == (double)THREADS * ITERS);
    sl_shdict_free(d);
}

static void test_values(void)
{
    sl_shdict *d = sl_shdict_new(16);
    sl_shd_value v = str("hello"), out;
    CHECK(sl_shdict_set(d, K("s"), &v, 0) == 0);
    CHECK(sl_shdict_get(d, K("s"), &out, NULL) == 1);
    CHECK(out.type == SL_SHD_STRING && out.len == 5 &&
          memcmp(out.str, "hello", 5) == 0);
    sl_shd_value_free(&out);

    /* a long string takes the heap path out of get, and embedded NULs
     * survive */
    static char big[5000];
    memset(big, 'x', sizeof(big));
    big[10] = '\0';
    v.str = big;
    v.len = sizeof(big);
    CHECK(sl_shdict_set(d, K("s"), &v, 0) == 0);
    CHECK(sl_shdict_get(d, K("s"), &out, NULL) == 1);
    CHECK(out.len == sizeof(big) && memcmp(out.str, big, sizeof(big)) == 0);
    sl_shd_value_free(&out);

    v.type = SL_SHD_BOOLEAN;
    v.boolean = 1;
    CHECK(sl_shdict_set(d, K("s"), &v, 0) == 0);
    CHECK(sl_shdict_get(d, K("s"), &out, NULL) == 1);
    CHECK(out.type == SL_SHD_BOOLEAN && out.boolean == 1);

    double n;
    CHECK(sl_shdict_incr(d, K("s"), 1, 0, 0, &n) == SL_EINVAL);
    CHECK(sl_shdict_get(d, K("missing"), &out, NULL) == 0);
    CHECK(out.type == SL_SHD_NIL);
    CHECK(sl_shdict_delete(d, K("s")) == 1);
    CHECK(sl_shdict_delete(d, K("s")) == 0);
    CHECK(sl_shdict_count(d) == 0);

    static char longkey[SL_SHD_MAX_KEY + 2];
    memset(longkey, 'k', sizeof(longkey) - 1);
    v = num(1);
    CHECK(sl_shdict_set(d, longkey, SL_SHD_MAX_KEY, &v, 0) == 0);
    CHECK(sl_shdict_set(d, longkey, SL_SHD_MAX_KEY + 1, &v, 0) == SL_EINVAL);
    CHECK(sl_shdict_set(d, "", 0, &v, 0) == SL_EINVAL);
    CHECK(sl_shdict_set(d, K("neg"), &v, -1) == SL_EINVAL);
    sl_shdict_free(d);
}

static void test_ttl(void)
{
    sl_shdict *d = sl_shdict_new(16);
    sl_shd_value v = num(7), out;
    double left, n;
    CHECK(sl_shdict_set(d, K("short"), &v, 0.05) == 0);
    CHECK(sl_shdict_set(d, K("forever"), &v, 0) == 0);
    CHECK(sl_shdict_ttl(d, K("short"), &left) == 1);
    CHECK(left > 0 && left <= 0.05);
    CHECK(sl_shdict_ttl(d, K("forever"), &left) == 1 && left == 0);

    /* incr applies its ttl only when it creates the key */
    CHECK(sl_shdict_incr(d, K("win"), 1, 10, 0.05, &n) == 0 && n == 11);
    CHECK(sl_shdict_incr(d, K("win"), 1, 10, 100, &n) == 0 && n == 12);
    CHECK(sl_shdict_ttl(d, K("win"), &left) == 1 && left <= 0.05);

    sleep_s(0.08);
    CHECK(sl_shdict_get(d, K("short"), &out, NULL) == 0);
    CHECK(sl_shdict_ttl(d, K("short"), &left) == 0);
    CHECK(sl_shdict_get(d, K("forever"), &out, NULL) == 1);
    /* an expired counter starts over from init */
    CHECK(sl_shdict_incr(d, K("win"), 1, 10, 0, &n) == 0 && n == 11);
    sl_shdict_free(d);
}

static void test_add(void)
{
    sl_shdict *d = sl_shdict_new(16);
    sl_shd_value a = str("first"), b = str("second"), out;
    CHECK(sl_shdict_add(d, K("k"), &a, 0.05) == 0);
    CHECK(sl_shdict_add(d, K("k"), &b, 0) == SL_SHD_EXISTS);
    CHECK(sl_shdict_get(d, K("k"), &out, NULL) == 1);
    CHECK(out.len == 5 && memcmp(out.str, "first", 5) == 0);
    sleep_s(0.08);
    /* an expired entry does not block add */
    CHECK(sl_shdict_add(d, K("k"), &b, 0) == 0);
    CHECK(sl_shdict_get(d, K("k"), &out, NULL) == 1);
    CHECK(out.len == 6 && memcmp(out.str, "second", 6) == 0);
    sl_shdict_free(d);
}

static void test_full(void)
{
    sl_shdict *d = sl_shdict_new(8);
    sl_shd_value v = num(1), out;
    char k[16];
    double n;
    for (int i = 0; i < 8; i++) {
        snprintf(k, sizeof(k), "live%d", i);
        CHECK(sl_shdict_set(d, K(k), &v, 0) == 0);
    }
    CHECK(sl_shdict_count(d) == 8);
    CHECK(sl_shdict_set(d, K("one-more"), &v, 0) == SL_ENOMEM);
    CHECK(sl_shdict_add(d, K("one-more"), &v, 0) == SL_ENOMEM);
    CHECK(sl_shdict_incr(d, K("one-more"), 1, 0, 0, &n) == SL_ENOMEM);
    /* existing keys still update, and nothing live was evicted */
    CHECK(sl_shdict_incr(d, K("live3"), 1, 0, 0, &n) == 0 && n == 2);
    for (int i = 0; i < 8; i++) {
        snprintf(k, sizeof(k), "live%d", i);
        CHECK(sl_shdict_get(d, K(k), &out, NULL) == 1);
    }
    /* expired entries anywhere make room again */
    CHECK(sl_shdict_delete(d, K("live0")) == 1);
    CHECK(sl_shdict_set(d, K("temp"), &v, 0.03) == 0);
    sleep_s(0.05);
    CHECK(sl_shdict_count(d) == 8);
    CHECK(sl_shdict_set(d, K("one-more"), &v, 0) == 0);
    CHECK(sl_shdict_get(d, K("temp"), &out, NULL) == 0);
    CHECK(sl_shdict_set(d, K("temp2"), &v, 0.01) == SL_ENOMEM);

    /* flush_expired counts what it drops */
    sl_shdict_delete(d, K("one-more"));
    CHECK(sl_shdict_set(d, K("temp2"), &v, 0.01) == 0);
    sleep_s(0.03);
    CHECK(sl_shdict_flush_expired(d) == 1);
    CHECK(sl_shdict_count(d) == 7);
    sl_shdict_free(d);
}

static void test_many_keys(void)
{
    /* enough keys to make every shard grow its bucket array */
    sl_shdict *d = sl_shdict_new(20000);
    char k[32];
    double n;
    int ok = 1;
    for (int i = 0; i < 20000; i++) {
        snprintf(k, sizeof(k), "key:%d", i);
        ok &= sl_shdict_incr(d, K(k), i, 0, 0, &n) == 0;
    }
    CHECK(ok);
    for (int i = 0; i < 20000; i += 997) {
        snprintf(k, sizeof(k), "key:%d", i);
        sl_shd_value out;
        ok &= sl_shdict_get(d, K(k), &out, NULL) == 1 && out.num == i;
    }
    CHECK(ok);
    CHECK(sl_shdict_count(d) == 20000);
    sl_shdict_free(d);
}

static void test_global(void)
{
    sl_shdict *g = sl_shdict_global();
    CHECK(g != NULL);
    CHECK(sl_shdict_global() == g);
    sl_shdict *mine = sl_shdict_new(4);
    sl_shdict_set_global(mine);
    CHECK(sl_shdict_global() == mine);
    sl_shdict_set_global(g);
    sl_shdict_free(mine);
}

int main(void)
{
    test_concurrent_incr();
    test_values();
    test_ttl();
    test_add();
    test_full();
    test_many_keys();
    test_global();
    sl_shdict_free(sl_shdict_global());
    printf("test_shdict: %d passed, %d failed\n", passed, failed);
    return failed != 0;
}
