/*
 * password.h - password hashing with libxcrypt (crypt_r, yescrypt).
 *
 * The plaintext is wiped (explicit_bzero) by the callers once hashed or
 * verified.  A stored value that does not start with '$' is a plaintext
 * password from a seed database: it verifies by constant-time comparison and
 * the caller then replaces it with a hash (password_needs_upgrade).
 */
#ifndef QCHAT_COMMON_PASSWORD_H
#define QCHAT_COMMON_PASSWORD_H

#include <stdbool.h>
#include <stddef.h>

#define PASSWORD_HASH_MAX 256

/* Hash plain with a fresh yescrypt salt of the given cost (1..11). 0 or -1. */
int password_hash(const char *plain, int cost, char *out, size_t outlen);
/* true when plain matches stored (a hash, or a seed plaintext). */
bool password_verify(const char *plain, const char *stored);
/* true when stored is not a hash (seed plaintext) and must be re-hashed. */
bool password_needs_upgrade(const char *stored);
/* true when stored is a hash, but not a yescrypt hash of this cost. */
bool password_needs_rehash(const char *stored, int cost);
/*
 * A login's check of plain against stored (NULL or "": no such user), at the
 * price of one hash of the given cost whatever stored is (see password.c).
 * true when it matches; *rehashed when rehash (len bytes) then holds the
 * value to store instead (a seed plaintext, or a hash at another cost).
 */
bool password_check(const char *plain, const char *stored, int cost, char *rehash, size_t len,
                    bool *rehashed);

#endif
