/*
 * social_common.c - what both storage drivers' social functions share:
 * login tokens (random text, its hash, constant-time comparison), device
 * names, group role ranks, and the driver lookup.
 *
 * A token is SOCIAL_TOKEN_BYTES from arc4random_buf written as base64url
 * without padding.  Only its SHA-256 (libmd) is stored: a stolen database
 * gives no usable token, and 256 random bits need no slow hash.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sha2.h>

#include "store/social.h"

static const char base64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* 3 bytes -> 4 characters; a last group of 1 or 2 bytes -> 2 or 3. */
static void encode_base64url(const uint8_t *in, size_t n, char *out)
{
    size_t i, o = 0;

    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

        out[o++] = base64url[v >> 18 & 63];
        out[o++] = base64url[v >> 12 & 63];
        out[o++] = base64url[v >> 6 & 63];
        out[o++] = base64url[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;

        out[o++] = base64url[v >> 18 & 63];
        out[o++] = base64url[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;

        out[o++] = base64url[v >> 18 & 63];
        out[o++] = base64url[v >> 12 & 63];
        out[o++] = base64url[v >> 6 & 63];
    }
    out[o] = '\0';
}

void social_token_new(char token[SOCIAL_TOKEN_CHARS + 1])
{
    uint8_t raw[SOCIAL_TOKEN_BYTES];

    arc4random_buf(raw, sizeof(raw));
    encode_base64url(raw, sizeof(raw), token);
    explicit_bzero(raw, sizeof(raw));
}

static bool is_token_shape(const char *token)
{
    size_t len;

    if (token == NULL)
        return false;
    len = strnlen(token, SOCIAL_TOKEN_CHARS + 1);
    return len == SOCIAL_TOKEN_CHARS && strspn(token, base64url) == len;
}

int social_token_hash(const char *token, uint8_t hash[SOCIAL_HASH_BYTES])
{
    SHA2_CTX ctx;

    if (!is_token_shape(token))
        return -1;
    SHA256Init(&ctx);
    SHA256Update(&ctx, (const uint8_t *)token, SOCIAL_TOKEN_CHARS);
    SHA256Final(hash, &ctx);
    return 0;
}

/* Every byte is looked at, whatever differs first (libbsd has no timingsafe_bcmp). */
bool social_hash_equal(const uint8_t a[SOCIAL_HASH_BYTES], const uint8_t b[SOCIAL_HASH_BYTES])
{
    volatile uint8_t diff = 0;
    size_t i;

    for (i = 0; i < SOCIAL_HASH_BYTES; i++)
        diff |= a[i] ^ b[i];
    return diff == 0;
}

const char *social_device_name(const char *device)
{
    if (device == NULL || device[0] == '\0')
        return SOCIAL_DEVICE_DFLT;
    return strnlen(device, SOCIAL_DEVICE_MAX + 1) <= SOCIAL_DEVICE_MAX ? device : NULL;
}

int social_role_rank(const char *role)
{
    if (role == NULL)
        return 0;
    if (strcmp(role, QC_ROLE_CREATOR) == 0)
        return 3;
    if (strcmp(role, QC_ROLE_ADMIN) == 0)
        return 2;
    if (strcmp(role, QC_ROLE_NORMAL) == 0)
        return 1;
    return 0;
}

const struct social_ops *social_driver(const char *name)
{
    if (name == NULL)
        return NULL;
    if (strcmp(name, social_sqlite_ops.name) == 0)
        return &social_sqlite_ops;
    if (strcmp(name, social_mysql_ops.name) == 0)
        return &social_mysql_ops;
    return NULL;
}
