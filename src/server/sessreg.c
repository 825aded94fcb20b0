/*
 * sessreg.c - the cluster's session registry: the claim script and its
 * arguments (see sessreg.h).
 *
 * The script runs atomically in Redis, so the check and the claim of a
 * login are one step: of two logins racing on two nodes, the second script
 * sees the first one's field.  Arguments:
 *   KEYS[1] the account's hash
 *   ARGV 1 mode (t r m s), 2 this node's field prefix "<node>:", 3 the new
 *        session's field ("" for a heartbeat), 4 its device, 5 named (1/0),
 *        6 max sessions, 7 now (epoch ms), 8 the deadline written,
 *        9 the key's TTL in ms, then per session of this node: field, since,
 *        device (device "": a session this relay inherited; what the hash
 *        holds for it is kept, else "default" since the given time; since
 *        "-": a heartbeat's session whose claim is still out, its field
 *        neither written nor dropped).
 * It answers { status, kicked fields... }: status 0, or -2 refused (nothing
 * of the other nodes changed, the new session not written).  The kicked
 * fields are the sessions the login replaces (same device, or the oldest
 * beyond max in multi, by (since, field): every claim applies the same
 * order, so whichever runs last leaves the max newest, even when the oldest
 * is the claiming login itself, whose claim ran late); in takeover every
 * other node's field is dropped and listed, the kick itself being the
 * generation's (relay.c).
 *
 * The relay sends it by EVALSHA: the script's 2.7 KB text goes to each
 * Redis once (an EVAL after its NOSCRIPT answer caches it), not with every
 * claim and every user's heartbeat.
 */
#include <sha1.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/sessreg.h"

#define SESSREG_FIXED_ARGS 13 /* EVAL(SHA), script (or SHA1), numkeys, key and ARGV 1..9 */
#define SESSREG_NUM_MAX    24

static const char claim_script[] =
    "local key, mode, pre = KEYS[1], ARGV[1], ARGV[2]\n"
    "local newf, dev, named = ARGV[3], ARGV[4], ARGV[5] == '1'\n"
    "local max, now, dl, ttl = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8], ARGV[9]\n"
    "local all = redis.call('HGETALL', key)\n"
    "local foreign, drop, stored = {}, {}, {}\n"
    "for i = 1, #all, 2 do\n"
    "  local f, v = all[i], all[i + 1]\n"
    "  local d, s, n = string.match(v, '^(%d+):(%d+):(.*)$')\n"
    "  if string.sub(f, 1, #pre) == pre and d ~= nil then\n"
    "    stored[f] = { s = s, d = n }\n"
    "    drop[f] = true\n"
    "  elseif string.sub(f, 1, #pre) == pre or d == nil or tonumber(d) < now then\n"
    "    drop[f] = true\n"
    "  else\n"
    "    foreign[#foreign + 1] = { f = f, s = tonumber(s), ss = s, d = n }\n"
    "  end\n"
    "end\n"
    "local mine = {}\n"
    "for i = 10, #ARGV - 2, 3 do\n"
    "  local ss, d = ARGV[i + 1], ARGV[i + 2]\n"
    "  if ss == '-' then\n"
    "    drop[ARGV[i]] = nil\n"
    "  else\n"
    "    if d == '' then\n"
    "      local st = stored[ARGV[i]]\n"
    "      if st then ss, d = st.s, st.d else d = 'default' end\n"
    "    end\n"
    "    mine[#mine + 1] = { f = ARGV[i], s = tonumber(ss), ss = ss, d = d, mine = true }\n"
    "  end\n"
    "end\n"
    "local status, kicked = 0, {}\n"
    "if mode == 'r' then\n"
    "  for _, e in ipairs(foreign) do\n"
    "    if not named or e.d ~= dev then status = -2 end\n"
    "  end\n"
    "end\n"
    "if status == 0 and mode ~= 's' then\n"
    "  local kept = {}\n"
    "  for _, e in ipairs(foreign) do\n"
    "    if mode == 't' or e.d == dev then\n"
    "      kicked[#kicked + 1] = e.f\n"
    "      drop[e.f] = true\n"
    "    else\n"
    "      kept[#kept + 1] = e\n"
    "    end\n"
    "  end\n"
    "  if mode == 'm' then\n"
    "    for _, e in ipairs(mine) do kept[#kept + 1] = e end\n"
    "    table.sort(kept, function(a, b)\n"
    "      if a.s ~= b.s then return a.s < b.s end\n"
    "      return a.f < b.f\n"
    "    end)\n"
    "    local excess = #kept - max\n"
    "    for _, e in ipairs(kept) do\n"
    "      if excess <= 0 then break end\n"
    "      kicked[#kicked + 1] = e.f\n"
    "      excess = excess - 1\n"
    "      if e.mine then e.gone = true else drop[e.f] = true end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "for f, _ in pairs(drop) do redis.call('HDEL', key, f) end\n"
    "for _, e in ipairs(mine) do\n"
    "  if not e.gone and not (status ~= 0 and e.f == newf) then\n"
    "    redis.call('HSET', key, e.f, dl .. ':' .. e.ss .. ':' .. e.d)\n"
    "  end\n"
    "end\n"
    "if redis.call('EXISTS', key) == 1 then redis.call('PEXPIRE', key, ttl) end\n"
    "local out = { status }\n"
    "for _, f in ipairs(kicked) do out[#out + 1] = f end\n"
    "return out\n";

/* The script's SHA1 in hex, as EVALSHA names it (computed once). */
static const char *script_sha(void)
{
    static char sha[SHA1_DIGEST_STRING_LENGTH];
    if (sha[0] == '\0')
        SHA1Data((const uint8_t *)claim_script, sizeof claim_script - 1, sha);
    return sha;
}

bool sessreg_noscript(const char *err, size_t len)
{
    return len >= 8 && memcmp(err, "NOSCRIPT", 8) == 0;
}

void sessreg_key(int32_t uid, char *out)
{
    snprintf(out, SESSREG_KEY_MAX, SESSREG_PREFIX "%d", uid);
}

void sessreg_cmd_free(struct sessreg_cmd *cmd)
{
    if (cmd->argv)
        for (int i = 0; i < cmd->argc; i++)
            free(cmd->argv[i]);
    free(cmd->argv);
    free(cmd->argvlen);
    memset(cmd, 0, sizeof *cmd);
}

/* Append a copy of s[0..len) as the next argument. */
static int push_arg(struct sessreg_cmd *cmd, const char *s, size_t len)
{
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return -1;
    memcpy(copy, s, len);
    copy[len] = '\0';
    cmd->argv[cmd->argc] = copy;
    cmd->argvlen[cmd->argc] = len;
    cmd->argc++;
    return 0;
}

static int push_str(struct sessreg_cmd *cmd, const char *s)
{
    return push_arg(cmd, s, strlen(s));
}

static int push_num(struct sessreg_cmd *cmd, long long v)
{
    char num[SESSREG_NUM_MAX];
    return push_arg(cmd, num, (size_t)snprintf(num, sizeof num, "%lld", v));
}

static int push_field(struct sessreg_cmd *cmd, int node, uint32_t gen)
{
    char f[SESSREG_FIELD_MAX];
    return push_arg(cmd, f, (size_t)snprintf(f, sizeof f, "%d:%u", node, gen));
}

int sessreg_build(struct sessreg_cmd *cmd, const struct sessreg_claim *c,
                  const struct sessreg_local *local, size_t n)
{
    size_t cap = SESSREG_FIXED_ARGS + 3 * n;
    char key[SESSREG_KEY_MAX], prefix[SESSREG_FIELD_MAX], mode[2] = { (char)c->mode, '\0' };
    memset(cmd, 0, sizeof *cmd);
    cmd->argv = calloc(cap, sizeof *cmd->argv);
    cmd->argvlen = calloc(cap, sizeof *cmd->argvlen);
    if (cmd->argv == NULL || cmd->argvlen == NULL)
        goto fail;
    sessreg_key(c->uid, key);
    snprintf(prefix, sizeof prefix, "%d:", c->node);
    int rc = push_str(cmd, c->by_sha ? "EVALSHA" : "EVAL") |
             push_str(cmd, c->by_sha ? script_sha() : claim_script) | push_str(cmd, "1") |
             push_str(cmd, key) | push_str(cmd, mode) | push_str(cmd, prefix);
    if (c->gen)
        rc |= push_field(cmd, c->node, c->gen);
    else
        rc |= push_str(cmd, "");
    rc |= push_str(cmd, c->device ? c->device : "") | push_str(cmd, c->named ? "1" : "0") |
          push_num(cmd, c->max) | push_num(cmd, c->now_ms) | push_num(cmd, c->now_ms + c->ttl_ms) |
          push_num(cmd, c->ttl_ms);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc |= push_field(cmd, c->node, local[i].gen) |
              (local[i].since_ms < 0 ? push_str(cmd, "-") : push_num(cmd, local[i].since_ms)) |
              push_str(cmd, local[i].device);
    if (rc == 0)
        return 0;
fail:
    sessreg_cmd_free(cmd);
    return -1;
}

bool sessreg_parse_field(const char *f, size_t len, int *node, uint32_t *gen)
{
    char tmp[SESSREG_FIELD_MAX];
    if (len == 0 || len >= sizeof tmp)
        return false;
    memcpy(tmp, f, len);
    tmp[len] = '\0';
    char *end;
    long nd = strtol(tmp, &end, 10);
    if (end == tmp || *end != ':' || nd < 0 || nd > 65535)
        return false;
    char *g = end + 1;
    unsigned long gv = strtoul(g, &end, 10);
    if (end == g || *end != '\0' || gv == 0 || gv > UINT32_MAX)
        return false;
    *node = (int)nd;
    *gen = (uint32_t)gv;
    return true;
}

/* The decimal number at v[*at..len) up to a colon; false when there is none. */
static bool number_then_colon(const char *v, size_t len, size_t *at, int64_t *out)
{
    int64_t n = 0;
    size_t i = *at, start = i;
    while (i < len && v[i] >= '0' && v[i] <= '9' && i - start < 19)
        n = n * 10 + (v[i++] - '0');
    if (i == start || i >= len || v[i] != ':')
        return false;
    *out = n;
    *at = i + 1;
    return true;
}

bool sessreg_parse_value(const char *v, size_t len, int64_t *deadline_ms, int64_t *since_ms,
                         const char **device, size_t *device_len)
{
    size_t at = 0;
    if (!number_then_colon(v, len, &at, deadline_ms) || !number_then_colon(v, len, &at, since_ms))
        return false;
    *device = v + at;
    *device_len = len - at;
    return true;
}
