/*
 * wsframe.c - qchat-bench's WebSocket client side (--ws): the upgrade
 * request, the check of the server's 101 answer, and RFC 6455 framing.
 *
 * The client masks every frame it sends (the server refuses unmasked ones).
 * A frame is reserved in the connection's output with its header and mask
 * key already written and its payload written by the caller afterwards, so
 * the payload is masked in place just before it is sent (ws_mask_frames):
 * the modes keep writing plain JSON and never see the framing.  Frames from
 * the server are unmasked; each text frame holds one object.
 */
#include <stdio.h>
#include <string.h>

#include "bench.h"

#define WS_HEAD_MAX   4096 /* longest 101 answer head accepted */
#define WS_OP_CONT    0x0
#define WS_FIN        0x80
#define WS_MASK_BIT   0x80
#define WS_LEN16      126
#define WS_LEN64      127
#define WS_KEY_SAMPLE "cWNoYXQtYmVuY2gtd3M9PQ==" /* 16 bytes, base64 */

int ws_upgrade_request(char *dst, size_t cap, const char *hostport)
{
    int n = snprintf(dst, cap,
                     "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\nOrigin: http://%s\r\n\r\n",
                     hostport, WS_KEY_SAMPLE, hostport);
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

long ws_upgrade_answer(const char *p, size_t n)
{
    const char *end = memmem(p, n, "\r\n\r\n", 4);
    if (end == NULL)
        return n > WS_HEAD_MAX ? -1 : 0;
    if (n < 12 || memcmp(p, "HTTP/1.1 101", 12) != 0)
        return -1;
    return (long)(end - p) + 4;
}

size_t ws_frame_header_len(size_t payload)
{
    return (payload < WS_LEN16 ? 2 : payload <= 0xffff ? 4 : 10) + 4;
}

size_t ws_frame_header(char *dst, int opcode, size_t payload, uint32_t key)
{
    unsigned char *h = (unsigned char *)dst;
    size_t i = 2;
    h[0] = (unsigned char)(WS_FIN | opcode);
    if (payload < WS_LEN16) {
        h[1] = (unsigned char)(WS_MASK_BIT | payload);
    } else if (payload <= 0xffff) {
        h[1] = WS_MASK_BIT | WS_LEN16;
        h[2] = (unsigned char)(payload >> 8);
        h[3] = (unsigned char)payload;
        i = 4;
    } else {
        h[1] = WS_MASK_BIT | WS_LEN64;
        for (int k = 0; k < 8; k++)
            h[2 + k] = (unsigned char)((uint64_t)payload >> (56 - 8 * k));
        i = 10;
    }
    memcpy(h + i, &key, 4);
    return i + 4;
}

/* The frame at p[0..n): its opcode, payload offset and length; 0: incomplete, -1: bad. */
long ws_frame_parse(const char *p, size_t n, int *opcode, size_t *off, size_t *len, bool *masked)
{
    const unsigned char *h = (const unsigned char *)p;
    if (n < 2)
        return 0;
    uint64_t plen = h[1] & 0x7f;
    size_t i = 2;
    if (plen == WS_LEN16) {
        if (n < 4)
            return 0;
        plen = (uint64_t)h[2] << 8 | h[3];
        i = 4;
    } else if (plen == WS_LEN64) {
        if (n < 10)
            return 0;
        plen = 0;
        for (int k = 0; k < 8; k++)
            plen = plen << 8 | h[2 + k];
        i = 10;
        if (plen > BENCH_IN_MAX)
            return -1;
    }
    *masked = (h[1] & WS_MASK_BIT) != 0;
    if (*masked)
        i += 4;
    if (!(h[0] & WS_FIN) || (h[0] & 0x0f) == WS_OP_CONT)
        return -1; /* the server sends every object as one frame */
    if (n < i + plen)
        return 0;
    *opcode = h[0] & 0x0f;
    *off = i;
    *len = (size_t)plen;
    return (long)(i + plen);
}

/* Mask the payloads of the client frames in p[0..n) (headers written by ws_frame_header). */
void ws_mask_frames(char *p, size_t n)
{
    size_t at = 0;
    while (at < n) {
        int op;
        size_t off, len;
        bool masked;
        long total = ws_frame_parse(p + at, n - at, &op, &off, &len, &masked);
        if (total <= 0 || !masked)
            return; /* cannot happen: the frames are ours and complete */
        unsigned char key[4];
        memcpy(key, p + at + off - 4, 4);
        unsigned char *q = (unsigned char *)p + at + off;
        for (size_t k = 0; k < len; k++)
            q[k] ^= key[k & 3];
        at += (size_t)total;
    }
}
