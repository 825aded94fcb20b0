/*
 * fuzz_proxy.c - libFuzzer target: arbitrary bytes as the start of a
 * connection with server.proxy_protocol = on, through proxy_parse_v1.
 *
 * Beyond the sanitizers, the parser's contract is checked on every input:
 * a header it takes ends in "\r\n", is no longer than PROXY_V1_MAX and than
 * the input, starts with "PROXY ", and names an IPv4, IPv6 or no address;
 * "need more bytes" is only said while fewer than PROXY_V1_MAX have come;
 * and the answer does not change when the same bytes come in one more byte
 * at a time (the worker calls it again as each read arrives).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "server/proxy.h"

#define SIGNATURE "PROXY "

static void check(int cond)
{
    if (!cond)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy: ASan sees any read past the bytes received */
    char *p = malloc(size ? size : 1);
    if (p == NULL)
        return 0;
    memcpy(p, data, size);
    struct sockaddr_storage addr;
    int n = proxy_parse_v1(p, size, &addr);

    check(n >= -1);
    if (n > 0) {
        check((size_t)n <= size && n <= PROXY_V1_MAX);
        check(n >= (int)strlen(SIGNATURE) + 2 && memcmp(p, SIGNATURE, strlen(SIGNATURE)) == 0);
        check(p[n - 2] == '\r' && p[n - 1] == '\n');
        check(addr.ss_family == AF_INET || addr.ss_family == AF_INET6 ||
              addr.ss_family == AF_UNSPEC);
    } else if (n == 0) {
        check(size < PROXY_V1_MAX);
    }
    /* a prefix never contradicts the whole: it needs more bytes or agrees */
    if (size > 0) {
        struct sockaddr_storage a2;
        int m = proxy_parse_v1(p, size - 1, &a2);
        check(m == 0 || m == n || (m == -1 && n == -1));
    }
    free(p);
    return 0;
}
