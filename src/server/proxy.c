/*
 * proxy.c - PROXY protocol v1 headers (see proxy.h):
 *   "PROXY TCP4 <src> <dst> <sport> <dport>\r\n"
 *   "PROXY TCP6 <src> <dst> <sport> <dport>\r\n"
 *   "PROXY UNKNOWN ...\r\n"
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>

#include "server/proxy.h"

#define PROXY_SIGNATURE "PROXY "
#define PROXY_FIELDS    6 /* PROXY family src dst sport dport */

static int parse_port(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    return *s && *end == '\0' && v >= 0 && v <= 65535 ? (int)v : -1;
}

int proxy_parse_v1(const char *p, size_t n, struct sockaddr_storage *addr)
{
    size_t siglen = strlen(PROXY_SIGNATURE);
    if (memcmp(p, PROXY_SIGNATURE, n < siglen ? n : siglen) != 0)
        return -1;
    /* The '\r' is at most at PROXY_V1_MAX - 2, the '\n' after it: a '\r' one
     * further would make the header longer than the spec allows (fuzz_proxy
     * found that one was accepted, and "need more" said with 107 bytes). */
    size_t cr_limit = PROXY_V1_MAX - 1;
    const char *cr = memchr(p, '\r', n < cr_limit ? n : cr_limit);
    if (cr == NULL)
        return n >= cr_limit ? -1 : 0;
    size_t len = (size_t)(cr - p);
    if (len + 1 >= n)
        return 0; /* the '\n' is not here yet */
    if (cr[1] != '\n')
        return -1;

    char line[PROXY_V1_MAX + 1];
    memcpy(line, p, len);
    line[len] = '\0';
    char *field[PROXY_FIELDS] = { 0 }, *save = NULL;
    int nf = 0;
    for (char *t = strtok_r(line, " ", &save); t && nf < PROXY_FIELDS;
         t = strtok_r(NULL, " ", &save))
        field[nf++] = t;
    memset(addr, 0, sizeof *addr);
    if (nf >= 2 && strcmp(field[1], "UNKNOWN") == 0) {
        addr->ss_family = AF_UNSPEC;
        return (int)len + 2;
    }
    if (nf != PROXY_FIELDS || strtok_r(NULL, " ", &save) != NULL || parse_port(field[4]) < 0 ||
        parse_port(field[5]) < 0)
        return -1;
    if (strcmp(field[1], "TCP4") == 0) {
        struct sockaddr_in *in = (struct sockaddr_in *)addr;
        struct in_addr dst;
        if (inet_pton(AF_INET, field[2], &in->sin_addr) != 1 ||
            inet_pton(AF_INET, field[3], &dst) != 1)
            return -1;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)parse_port(field[4]));
    } else if (strcmp(field[1], "TCP6") == 0) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)addr;
        struct in6_addr dst;
        if (inet_pton(AF_INET6, field[2], &in6->sin6_addr) != 1 ||
            inet_pton(AF_INET6, field[3], &dst) != 1)
            return -1;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)parse_port(field[4]));
    } else {
        return -1;
    }
    return (int)len + 2;
}
