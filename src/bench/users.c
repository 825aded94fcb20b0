/*
 * users.c - the accounts a benchmark logs in as: synthetic ids (relay_ref
 * takes any id and password), an ids file written by `qchat-bench reg`
 * ("id password" per line, '#' comments), or a table filled by registering.
 * Passwords are kept JSON-escaped, ready to go into a LOGIN request.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "common/proto.h"

#define PW_ESCAPED_MAX (QC_PASSWORD_MAX * 6 + 1) /* every byte as \u00XX */

int json_escape(char *dst, size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t k = strlen(dst);

    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        char tmp[8];
        size_t tl;
        if (ch == '"' || ch == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)ch;
            tl = 2;
        } else if (ch < 0x20) {
            memcpy(tmp, "\\u00", 4);
            tmp[4] = hex[ch >> 4];
            tmp[5] = hex[ch & 0xf];
            tl = 6;
        } else {
            tmp[0] = (char)ch;
            tl = 1;
        }
        if (k + tl >= cap)
            return -1;
        memcpy(dst + k, tmp, tl);
        k += tl;
    }
    dst[k] = '\0';
    return 0;
}

void users_free(struct users *u)
{
    free(u->id);
    free(u->pw);
    free(u->text);
    memset(u, 0, sizeof *u);
}

/* n users sharing one password, ids all -1. */
int users_alloc(struct users *u, uint32_t n, const char *password)
{
    memset(u, 0, sizeof *u);
    u->n = n;
    u->id = malloc((n ? n : 1) * sizeof *u->id);
    u->pw = malloc((n ? n : 1) * sizeof *u->pw);
    u->text = calloc(1, PW_ESCAPED_MAX);
    if (!u->id || !u->pw || !u->text) {
        users_free(u);
        fprintf(stderr, "qchat-bench: out of memory for %u users\n", n);
        return -1;
    }
    if (json_escape(u->text, PW_ESCAPED_MAX, password) < 0) {
        users_free(u);
        fprintf(stderr, "qchat-bench: password too long\n");
        return -1;
    }
    for (uint32_t i = 0; i < n; i++) {
        u->id[i] = -1;
        u->pw[i] = u->text;
    }
    return 0;
}

int users_synthetic(struct users *u, uint32_t n, long base, const char *password)
{
    if (users_alloc(u, n, password) < 0)
        return -1;
    for (uint32_t i = 0; i < n; i++)
        u->id[i] = (int32_t)(base + (long)i);
    return 0;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

/* Parse "id password"; the password is the rest of the line. */
static int parse_line(char *line, long *id, char **pw)
{
    char *end;

    errno = 0;
    *id = strtol(line, &end, 10);
    if (errno || end == line || *id < 0 || *id > INT32_MAX || (*end != ' ' && *end != '\t'))
        return -1;
    *pw = trim(end);
    return **pw ? 0 : -1;
}

int users_load(struct users *u, const char *path, uint32_t skip, uint32_t need)
{
    FILE *f = fopen(path, "r");
    char line[BENCH_LINE_MAX];
    size_t used = 0, cap = 0;
    uint32_t lineno = 0;

    memset(u, 0, sizeof *u);
    if (!f) {
        fprintf(stderr, "qchat-bench: %s: %s\n", path, strerror(errno));
        return -1;
    }
    u->id = malloc((need ? need : 1) * sizeof *u->id);
    u->pw = malloc((need ? need : 1) * sizeof *u->pw);
    size_t *pwoff = malloc((need ? need : 1) * sizeof *pwoff);
    if (!u->id || !u->pw || !pwoff)
        goto nomem;
    while (u->n < need && fgets(line, sizeof line, f)) {
        lineno++;
        char *s = trim(line), *pw;
        long id;
        if (!*s || *s == '#')
            continue;
        if (parse_line(s, &id, &pw) < 0) {
            fprintf(stderr, "qchat-bench: %s:%u: expected \"id password\"\n", path, lineno);
            goto fail;
        }
        if (skip) {
            skip--;
            continue;
        }
        if (used + PW_ESCAPED_MAX > cap) {
            size_t nc = cap ? cap * 2 : 64 * 1024;
            char *t = realloc(u->text, nc);
            if (!t)
                goto nomem;
            u->text = t;
            cap = nc;
        }
        u->text[used] = '\0';
        if (json_escape(u->text + used, PW_ESCAPED_MAX, pw) < 0) {
            fprintf(stderr, "qchat-bench: %s:%u: password too long\n", path, lineno);
            goto fail;
        }
        u->id[u->n] = (int32_t)id;
        pwoff[u->n] = used;
        used += strlen(u->text + used) + 1;
        u->n++;
    }
    fclose(f);
    f = NULL;
    if (u->n < need) {
        fprintf(stderr, "qchat-bench: %s: %u users, %u needed\n", path, u->n, need);
        goto fail;
    }
    for (uint32_t i = 0; i < u->n; i++)
        u->pw[i] = u->text + pwoff[i];
    free(pwoff);
    return 0;
nomem:
    fprintf(stderr, "qchat-bench: out of memory reading %s\n", path);
fail:
    if (f)
        fclose(f);
    free(pwoff);
    users_free(u);
    return -1;
}

int users_save(const struct users *u, const char *path, const char *password)
{
    FILE *f = fopen(path, "w");

    if (!f) {
        fprintf(stderr, "qchat-bench: %s: %s\n", path, strerror(errno));
        return -1;
    }
    for (uint32_t i = 0; i < u->n; i++)
        if (u->id[i] >= 0)
            fprintf(f, "%d %s\n", (int)u->id[i], password);
    int bad = ferror(f);
    if (fclose(f) != 0)
        bad = 1;
    if (bad) {
        fprintf(stderr, "qchat-bench: writing %s failed\n", path);
        return -1;
    }
    return 0;
}
