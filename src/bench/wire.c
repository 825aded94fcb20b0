/*
 * wire.c - qchat-bench's view of the wire: a one-pass scanner for the few
 * top-level fields of a server line it needs, the fixed-width tag carried in
 * every chat text (kind, stream, sequence, send time), prebuilt request
 * templates, and the per-stream receive window that tells new, late and
 * duplicate messages apart.  Nothing here allocates per message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static const char hexdigits[] = "0123456789abcdef";

static bool is_ws(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

static size_t skip_ws(const char *s, size_t n, size_t i)
{
    while (i < n && is_ws(s[i]))
        i++;
    return i;
}

/* i at the opening quote; returns the index of the closing quote (or n). */
static size_t skip_string(const char *s, size_t n, size_t i)
{
    for (i++; i < n && s[i] != '"'; i++)
        if (s[i] == '\\')
            i++;
    return i < n ? i : n;
}

/* i at '{' or '['; returns one past the matching close (or n). */
static size_t skip_nested(const char *s, size_t n, size_t i)
{
    int depth = 0;

    for (; i < n; i++) {
        char ch = s[i];
        if (ch == '"')
            i = skip_string(s, n, i);
        else if (ch == '{' || ch == '[')
            depth++;
        else if ((ch == '}' || ch == ']') && --depth == 0)
            return i + 1;
    }
    return n;
}

static bool parse_long(const char *s, size_t n, long *out)
{
    size_t i = 0;
    bool neg = false;
    long v = 0;

    if (i < n && s[i] == '-') {
        neg = true;
        i++;
    }
    if (i >= n || s[i] < '0' || s[i] > '9')
        return false;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
        if (v > (1L << 52))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = neg ? -v : v;
    return true;
}

static bool key_is(const char *k, size_t kn, const char *name)
{
    size_t len = strlen(name);
    return kn == len && memcmp(k, name, len) == 0;
}

static void take_int(struct jfields *f, unsigned bit, long *slot, const char *v, size_t vn)
{
    if (parse_long(v, vn, slot))
        f->has |= bit;
}

static void take_field(struct jfields *f, const char *k, size_t kn, const char *v, size_t vn,
                       bool is_string)
{
    if (is_string) {
        if (key_is(k, kn, "msg")) {
            f->msg = v;
            f->msglen = vn;
            f->has |= JF_MSG;
        }
        return;
    }
    if (key_is(k, kn, "msgid"))
        take_int(f, JF_MSGID, &f->msgid, v, vn);
    else if (key_is(k, kn, "errno"))
        take_int(f, JF_ERRNO, &f->err, v, vn);
    else if (key_is(k, kn, "id"))
        take_int(f, JF_ID, &f->id, v, vn);
    else if (key_is(k, kn, "toid"))
        take_int(f, JF_TOID, &f->toid, v, vn);
    else if (key_is(k, kn, "groupid"))
        take_int(f, JF_GROUPID, &f->groupid, v, vn);
    else if (key_is(k, kn, "req"))
        take_int(f, JF_REQ, &f->req, v, vn);
    else if (key_is(k, kn, "userid"))
        take_int(f, JF_USERID, &f->userid, v, vn);
}

/*
 * Walk the top-level members of one object, calling visit(key, value) for
 * each; a string value is given without its quotes.  0, or -1 if s is not
 * a well-formed object.  visit returns false to stop early.
 */
typedef bool (*jvisit_fn)(void *arg, const char *k, size_t kn, const char *v, size_t vn,
                          bool is_string);

static int jwalk(const char *s, size_t n, jvisit_fn visit, void *arg)
{
    size_t i = skip_ws(s, n, 0);

    if (i >= n || s[i] != '{')
        return -1;
    i++;
    for (;;) {
        while (i < n && (is_ws(s[i]) || s[i] == ','))
            i++;
        if (i >= n)
            return -1;
        if (s[i] == '}')
            return 0;
        if (s[i] != '"')
            return -1;
        size_t ks = i + 1;
        i = skip_string(s, n, i);
        if (i >= n)
            return -1;
        size_t ke = i++;
        i = skip_ws(s, n, i);
        if (i >= n || s[i] != ':')
            return -1;
        i = skip_ws(s, n, i + 1);
        if (i >= n)
            return -1;
        size_t vs = i, ve;
        bool is_string = false;
        if (s[i] == '"') {
            vs = i + 1;
            i = skip_string(s, n, i);
            if (i >= n)
                return -1;
            ve = i++;
            is_string = true;
        } else if (s[i] == '{' || s[i] == '[') {
            i = skip_nested(s, n, i);
            ve = i;
        } else {
            while (i < n && s[i] != ',' && s[i] != '}' && !is_ws(s[i]))
                i++;
            ve = i;
        }
        if (!visit(arg, s + ks, ke - ks, s + vs, ve - vs, is_string))
            return 0;
    }
}

static bool take_visit(void *arg, const char *k, size_t kn, const char *v, size_t vn,
                       bool is_string)
{
    take_field(arg, k, kn, v, vn, is_string);
    return true;
}

int jscan(const char *s, size_t n, struct jfields *f)
{
    f->has = 0;
    f->msg = NULL;
    f->msglen = 0;
    return jwalk(s, n, take_visit, f);
}

struct jfind {
    const char *key;
    const char *v;
    size_t vn;
    bool found;
};

static bool find_visit(void *arg, const char *k, size_t kn, const char *v, size_t vn,
                       bool is_string)
{
    struct jfind *jf = arg;

    if (!key_is(k, kn, jf->key))
        return true;
    jf->v = v;
    jf->vn = vn;
    jf->found = true;
    return false;
}

int jfind(const char *s, size_t n, const char *key, const char **v, size_t *vn)
{
    struct jfind jf = { .key = key };

    if (jwalk(s, n, find_visit, &jf) < 0 || !jf.found)
        return -1;
    *v = jf.v;
    *vn = jf.vn;
    return 0;
}

int jarray_next(const char *s, size_t n, size_t *pos, const char **v, size_t *vn)
{
    size_t i = *pos;

    if (i == 0) {
        i = skip_ws(s, n, 0);
        if (i >= n || s[i] != '[')
            return -1;
        i++;
    }
    while (i < n && (is_ws(s[i]) || s[i] == ','))
        i++;
    if (i >= n)
        return -1;
    if (s[i] == ']') {
        *pos = n;
        return 0;
    }
    if (s[i] != '"')
        return -1;
    size_t end = skip_string(s, n, i);
    if (end >= n)
        return -1;
    *v = s + i + 1;
    *vn = end - i - 1;
    *pos = end + 1;
    return 1;
}

int jescaped_string_field(const char *s, size_t n, const char *key, const char **v, size_t *vn)
{
    size_t kl = strlen(key);

    /* inside an escaped object a key reads \"key\" and a string value \"... */
    for (size_t i = 0; i + kl + 4 <= n; i++) {
        if (s[i] != '\\' || s[i + 1] != '"' || memcmp(s + i + 2, key, kl) != 0 ||
            s[i + 2 + kl] != '\\' || s[i + 3 + kl] != '"')
            continue;
        size_t j = skip_ws(s, n, i + kl + 4);
        if (j >= n || s[j] != ':')
            continue;
        j = skip_ws(s, n, j + 1);
        if (j + 2 > n || s[j] != '\\' || s[j + 1] != '"')
            continue;
        size_t start = j + 2, k = start;
        while (k + 1 < n && !(s[k] == '\\' && s[k + 1] == '"'))
            k += s[k] == '\\' && s[k + 1] == '\\' ? 2 : 1;
        if (k + 1 >= n)
            return -1;
        *v = s + start;
        *vn = k - start;
        return 0;
    }
    return -1;
}

/* ---- tags --------------------------------------------------------------- */

void hex32_write(char *p, uint32_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = hexdigits[v & 0xf];
        v >>= 4;
    }
}

static void hex64_write(char *p, uint64_t v)
{
    for (int i = 15; i >= 0; i--) {
        p[i] = hexdigits[v & 0xf];
        v >>= 4;
    }
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

static bool hex_read(const char *p, int digits, uint64_t *out)
{
    uint64_t v = 0;

    for (int i = 0; i < digits; i++) {
        int d = hexval(p[i]);
        if (d < 0)
            return false;
        v = (v << 4) | (uint64_t)d;
    }
    *out = v;
    return true;
}

void tag_write(char *p, char kind, uint32_t a, uint32_t b, uint64_t ts)
{
    p[0] = kind;
    hex32_write(p + 1, a);
    hex32_write(p + 9, b);
    hex64_write(p + 17, ts);
}

int tag_read(const char *p, size_t n, char kind, uint32_t *a, uint32_t *b, uint64_t *ts)
{
    uint64_t va, vb;

    if (n < TAG_LEN || p[0] != kind)
        return -1;
    if (!hex_read(p + 1, 8, &va) || !hex_read(p + 9, 8, &vb) || !hex_read(p + 17, 16, ts))
        return -1;
    *a = (uint32_t)va;
    *b = (uint32_t)vb;
    return 0;
}

/* ---- templates ---------------------------------------------------------- */

#define SEQ_FIELD      "\"seq\":\"00000000\","
#define SEQ_FIELD_SKIP 7 /* from the field start to the digits */
#define MSG_FIELD      "\"msg\":\""
#define MSG_END        "\"}"

int tmpl_init(struct msgtmpl *t, const char *head, int size, bool with_seq)
{
    size_t hl = strlen(head);
    size_t text = size > TAG_LEN ? (size_t)size : TAG_LEN;
    size_t seql = with_seq ? strlen(SEQ_FIELD) : 0;
    size_t total = hl + seql + strlen(MSG_FIELD) + text + strlen(MSG_END);
    char *p = malloc(total);

    if (!p)
        return -1;
    t->buf = p;
    t->len = (uint32_t)total;
    memcpy(p, head, hl);
    p += hl;
    t->seq_off = 0;
    if (with_seq) {
        memcpy(p, SEQ_FIELD, seql);
        t->seq_off = (uint32_t)(p - t->buf) + SEQ_FIELD_SKIP;
        p += seql;
    }
    memcpy(p, MSG_FIELD, strlen(MSG_FIELD));
    p += strlen(MSG_FIELD);
    t->tag_off = (uint32_t)(p - t->buf);
    tag_write(p, 'x', 0, 0, 0);
    memset(p + TAG_LEN, '.', text - TAG_LEN);
    p += text;
    memcpy(p, MSG_END, strlen(MSG_END));
    return 0;
}

void tmpl_free(struct msgtmpl *t)
{
    free(t->buf);
    t->buf = NULL;
    t->len = 0;
}

/* ---- receive window ----------------------------------------------------- */

int seqwin_add(struct seqwin *w, uint32_t seq)
{
    if (seq < w->base)
        return SEQ_DUP;
    uint32_t d = seq - w->base;
    if (d >= BENCH_WINDOW) {
        /* too far ahead: whatever the window still misses is given up as lost */
        uint32_t shift = d - (BENCH_WINDOW - 1);
        w->mask = shift >= BENCH_WINDOW ? 0 : w->mask >> shift;
        w->base += shift;
        d = seq - w->base;
    }
    uint64_t bit = 1ULL << d;
    if (w->mask & bit)
        return SEQ_DUP;
    w->mask |= bit;
    int late = seq + 1 < w->top ? SEQ_LATE : SEQ_NEW;
    if (seq + 1 > w->top)
        w->top = seq + 1;
    while (w->mask & 1) {
        w->mask >>= 1;
        w->base++;
    }
    return late;
}
