/*
 * password.c - password hashing with libxcrypt (crypt_r, yescrypt).
 *
 * New hashes are yescrypt ("$y$") with a fresh salt from crypt_gensalt_rn
 * (which reads the kernel's random source).  struct crypt_data is about
 * 32 KiB, too big for an event loop's stack: each call allocates one and
 * wipes it before freeing, since it holds the password's derived state.
 *
 * A stored value that does not start with '$' is a plaintext password from
 * a seed database.  It is compared in constant time over the longer of the
 * two lengths; the lengths themselves may leak through timing, which is
 * acceptable for a value that is replaced by a hash at the first login.
 *
 * password_check is the whole login check, made to cost one hash at the
 * current cost whatever the stored value: an unknown user pays a hash of the
 * attempt, a seed plaintext is compared only after its replacement hash is
 * made, and a hash at another cost (or another method) is replaced at the
 * next successful login.
 * A stored value starting with '*' is libxcrypt's marker of an unusable
 * hash (a locked account) and never verifies, nor does an empty value
 * (so a seed plaintext beginning with '*' cannot be used: lock, not guess).
 */
#include <stdlib.h>
#include <string.h>
#include <crypt.h>

#include "common/password.h"

#define PASSWORD_PREFIX   "$y$" /* yescrypt */
#define PASSWORD_COST_MIN 1
#define PASSWORD_COST_MAX 11

/* Constant-time equality of two byte strings of the same length n. */
static bool bytes_equal(const void *a, const void *b, size_t n)
{
    const volatile unsigned char *pa = a, *pb = b;
    unsigned char diff = 0;

    for (size_t i = 0; i < n; i++)
        diff |= pa[i] ^ pb[i];
    return diff == 0;
}

/* Constant-time (for a given pair of lengths) string equality. */
static bool strings_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), n = la > lb ? la : lb;
    const volatile unsigned char *pa = (const unsigned char *)a;
    const volatile unsigned char *pb = (const unsigned char *)b;
    unsigned char diff = la != lb;

    for (size_t i = 0; i < n; i++) {
        unsigned char ca = i < la ? pa[i] : 0, cb = i < lb ? pb[i] : 0;

        diff |= ca ^ cb;
    }
    return diff == 0;
}

static struct crypt_data *crypt_data_new(void)
{
    return calloc(1, sizeof(struct crypt_data));
}

static void crypt_data_free(struct crypt_data *cd)
{
    explicit_bzero(cd, sizeof(*cd));
    free(cd);
}

int password_hash(const char *plain, int cost, char *out, size_t outlen)
{
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    struct crypt_data *cd;
    const char *h;
    size_t n;
    int rc = -1;

    if (cost < PASSWORD_COST_MIN || cost > PASSWORD_COST_MAX)
        return -1;
    if (crypt_gensalt_rn(PASSWORD_PREFIX, (unsigned long)cost, NULL, 0, setting,
                         (int)sizeof(setting)) == NULL)
        return -1;
    cd = crypt_data_new();
    if (cd == NULL)
        return -1;
    h = crypt_r(plain, setting, cd);
    if (h != NULL && h[0] != '*') {
        n = strlen(h);
        if (n < outlen) {
            memcpy(out, h, n + 1);
            rc = 0;
        }
    }
    crypt_data_free(cd);
    return rc;
}

bool password_needs_upgrade(const char *stored)
{
    return stored[0] != '$' && stored[0] != '*' && stored[0] != '\0';
}

bool password_verify(const char *plain, const char *stored)
{
    struct crypt_data *cd;
    const char *h;
    bool ok = false;
    size_t n;

    if (stored[0] == '*' || stored[0] == '\0')
        return false;
    if (stored[0] != '$')
        return strings_equal(plain, stored);

    cd = crypt_data_new();
    if (cd == NULL)
        return false;
    h = crypt_r(plain, stored, cd);
    if (h != NULL && h[0] != '*') {
        n = strlen(stored);
        ok = strlen(h) == n && bytes_equal(h, stored, n);
    }
    crypt_data_free(cd);
    return ok;
}

bool password_needs_rehash(const char *stored, int cost)
{
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];

    if (stored[0] != '$')
        return false; /* plaintext: password_needs_upgrade; locked: never */
    if (crypt_gensalt_rn(PASSWORD_PREFIX, (unsigned long)cost, NULL, 0, setting,
                         (int)sizeof(setting)) == NULL)
        return false;
    /* "$y$PARAMS$SALT": the parameters encode the cost */
    const char *end = strchr(setting + strlen(PASSWORD_PREFIX), '$');
    if (end == NULL)
        return false;
    size_t n = (size_t)(end - setting) + 1;
    return strncmp(stored, setting, n) != 0;
}

bool password_check(const char *plain, const char *stored, int cost, char *rehash, size_t len,
                    bool *rehashed)
{
    bool ok;

    *rehashed = false;
    if (stored == NULL || stored[0] == '\0' || stored[0] == '*') {
        /* no such user, or locked: the same price as a real check, then no */
        password_hash(plain, cost, rehash, len);
        explicit_bzero(rehash, len);
        return false;
    }
    if (password_needs_upgrade(stored)) {
        /* pay the hash first: a plaintext compare alone would be instant */
        bool hashed = password_hash(plain, cost, rehash, len) == 0;
        ok = password_verify(plain, stored);
        *rehashed = ok && hashed;
        if (!*rehashed)
            explicit_bzero(rehash, len);
        return ok;
    }
    ok = password_verify(plain, stored);
    if (ok && password_needs_rehash(stored, cost))
        *rehashed = password_hash(plain, cost, rehash, len) == 0;
    return ok;
}
