/*
 * test_ipc.c - unit tests for the channel between qchatd's processes.
 *
 * Covers: a packet arrives whole at its type's handler, with its payload
 * struct and tail; the handler table refuses types a link does not carry;
 * a peer that closes while packets of ours are still unread in its queue
 * (the kernel then reports ECONNRESET once, ahead of the packets the peer
 * sent before it closed: those confirmations must still be read, or a chat
 * the peer wrote would be stored offline too and delivered twice - the
 * SIGTERM duplicate of issue 10); a descriptor passed with NEW_PEER; packets
 * queued while the socket is full leave in order on flush; a corked link
 * sends nothing until flushed, then all of a round's packets in order; the decoder's
 * rules (length field, payload size, tail unit, descriptor, unknown type);
 * a malformed packet kills the receiving process (SIGABRT), a packet too
 * large for a link is refused at the sender with EMSGSIZE.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/log.h"
#include "server/ipc.h"

#define CONFIRMS       5
#define MAX_SEEN       4096
#define TEXT_MAX       64
#define BIG_TEXT       (60 * 1024) /* a few of these fill a socket's buffer */
#define MAX_READS      100000
#define CORKED_PACKETS 150 /* more than one sendmmsg batch */

/* What the handlers saw. */
struct seen {
    int n;
    uint32_t type[MAX_SEEN];
    uint32_t token[MAX_SEEN];
    char text[TEXT_MAX];
    size_t text_len;
    int fd;
};

static void on_confirm(void *ctx, uint32_t link, const struct ipc_msg *m)
{
    struct seen *s = ctx;
    const struct ipc_confirm *c = m->body;
    (void)link;
    assert_true(s->n < MAX_SEEN);
    s->type[s->n] = m->type;
    s->token[s->n++] = c->token;
}

static void on_deliver(void *ctx, uint32_t link, const struct ipc_msg *m)
{
    struct seen *s = ctx;
    const struct ipc_deliver *d = m->body;
    (void)link;
    assert_true(s->n < MAX_SEEN);
    s->type[s->n] = m->type;
    s->token[s->n++] = d->token;
    s->text_len = m->tail_len < TEXT_MAX ? m->tail_len : TEXT_MAX;
    memcpy(s->text, m->tail, s->text_len);
}

static void on_new_peer(void *ctx, uint32_t link, const struct ipc_msg *m)
{
    struct seen *s = ctx;
    const struct ipc_new_peer *np = m->body;
    (void)link;
    s->type[s->n] = m->type;
    s->token[s->n++] = np->peer;
    s->fd = m->fd;
}

static const struct ipc_handlers table = {
    .from = "test",
    .fn = { [IPC_CONFIRM] = on_confirm, [IPC_DELIVER] = on_deliver, [IPC_NEW_PEER] = on_new_peer },
};

static char *packet_buf(void)
{
    char *b = malloc(IPC_MAX_PACKET);
    assert_non_null(b);
    return b;
}

static void make_pair(struct ipc_chan *a, struct ipc_chan *b)
{
    int sv[2];
    assert_int_equal(ipc_pair(sv), 0);
    ipc_chan_init(a, sv[0]);
    ipc_chan_init(b, sv[1]);
}

static void send_confirm(struct ipc_chan *ch, uint32_t token)
{
    struct ipc_confirm c = { .token = token };
    assert_int_equal(ipc_chan_send(ch, IPC_CONFIRM, &c, NULL, 0), 0);
}

static void test_packet_reaches_its_handler(void **state)
{
    (void)state;
    struct ipc_chan a, b;
    make_pair(&a, &b);
    struct ipc_deliver d = { .uid = 42, .token = 7, .flags = IPC_F_CHAT };
    assert_int_equal(ipc_chan_send(&a, IPC_DELIVER, &d, "hello", 5), 0);
    assert_false(ipc_chan_waiting(&a));
    char *buf = packet_buf();
    struct seen s = { .fd = -1 };
    assert_int_equal(ipc_chan_read(&b, buf, 10, &table, &s, 3), IPC_READ_IDLE);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.type[0], IPC_DELIVER);
    assert_int_equal(s.token[0], 7);
    assert_int_equal(s.text_len, 5);
    assert_memory_equal(s.text, "hello", 5);
    ipc_chan_close(&a);
    assert_int_equal(ipc_chan_read(&b, buf, 10, &table, &s, 3), IPC_READ_CLOSED);
    ipc_chan_close(&b);
    free(buf);
}

/* The peer sends confirmations, leaves one packet of ours unread and exits. */
static void test_packets_after_reset_are_read(void **state)
{
    (void)state;
    struct ipc_chan a, b;
    make_pair(&a, &b);
    for (uint32_t t = 1; t <= CONFIRMS; t++)
        send_confirm(&b, t);
    struct ipc_deliver d = { .token = 99 };
    assert_int_equal(ipc_chan_send(&a, IPC_DELIVER, &d, "x", 1), 0);
    ipc_chan_close(&b); /* with our DELIVER unread: the kernel sets ECONNRESET on a */

    char *buf = packet_buf();
    struct seen s = { .fd = -1 };
    assert_int_equal(ipc_chan_read(&a, buf, 100, &table, &s, 0), IPC_READ_CLOSED);
    assert_int_equal(s.n, CONFIRMS);
    for (uint32_t t = 1; t <= CONFIRMS; t++)
        assert_int_equal(s.token[t - 1], t);
    ipc_chan_close(&a);
    free(buf);
}

static void test_descriptor_passed(void **state)
{
    (void)state;
    struct ipc_chan a, b, x, y;
    make_pair(&a, &b);
    make_pair(&x, &y);
    struct ipc_new_peer np = { .peer = 5 };
    assert_int_equal(ipc_chan_send_fd(&a, IPC_NEW_PEER, &np, y.fd), 0);
    char *buf = packet_buf();
    struct seen s = { .fd = -1 };
    assert_int_equal(ipc_chan_read(&b, buf, 10, &table, &s, 0), IPC_READ_IDLE);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.token[0], 5);
    assert_true(s.fd >= 0);
    /* The passed descriptor is the other end of x. */
    struct ipc_chan passed;
    ipc_chan_init(&passed, s.fd);
    send_confirm(&x, 3);
    struct seen s2 = { .fd = -1 };
    assert_int_equal(ipc_chan_read(&passed, buf, 10, &table, &s2, 0), IPC_READ_IDLE);
    assert_int_equal(s2.n, 1);
    assert_int_equal(s2.token[0], 3);
    ipc_chan_close(&passed);
    ipc_chan_close(&x);
    ipc_chan_close(&y);
    ipc_chan_close(&a);
    ipc_chan_close(&b);
    free(buf);
}

/* Sends beyond what the socket takes are queued, and leave in order. */
static void test_queue_keeps_order(void **state)
{
    (void)state;
    struct ipc_chan a, b;
    make_pair(&a, &b);
    char *big = calloc(1, BIG_TEXT);
    assert_non_null(big);
    uint32_t sent = 0;
    while (!ipc_chan_waiting(&a) && sent < MAX_SEEN / 2) {
        struct ipc_deliver d = { .token = ++sent };
        assert_int_equal(ipc_chan_send(&a, IPC_DELIVER, &d, big, BIG_TEXT), 0);
    }
    assert_true(ipc_chan_waiting(&a));
    for (int i = 0; i < CONFIRMS; i++) {
        struct ipc_deliver d = { .token = ++sent };
        assert_int_equal(ipc_chan_send(&a, IPC_DELIVER, &d, big, BIG_TEXT), 0);
    }
    char *buf = packet_buf();
    struct seen s = { .fd = -1 };
    for (int i = 0; i < MAX_READS && (uint32_t)s.n < sent; i++) {
        assert_int_not_equal(ipc_chan_read(&b, buf, 1, &table, &s, 0), IPC_READ_CLOSED);
        assert_int_equal(ipc_chan_flush(&a), 0);
    }
    assert_int_equal(s.n, sent);
    assert_false(ipc_chan_waiting(&a));
    for (uint32_t t = 1; t <= sent; t++)
        assert_int_equal(s.token[t - 1], t);
    ipc_chan_close(&a);
    ipc_chan_close(&b);
    free(buf);
    free(big);
}

/* A corked link sends nothing until flushed, then every packet, in order, in batches. */
static void test_corked_link_sends_on_flush(void **state)
{
    (void)state;
    struct ipc_chan a, b;
    make_pair(&a, &b);
    ipc_chan_cork(&a, true);
    char *buf = packet_buf();
    struct seen s = { .fd = -1 };
    for (int round = 0; round < 2; round++) {
        for (uint32_t t = 1; t <= CORKED_PACKETS; t++) {
            char text[TEXT_MAX];
            int n = snprintf(text, sizeof text, "chat %d.%u", round, t);
            struct ipc_deliver d = { .token = round * CORKED_PACKETS + t };
            assert_int_equal(ipc_chan_send(&a, IPC_DELIVER, &d, text, (size_t)n), 0);
        }
        assert_true(ipc_chan_waiting(&a));
        assert_int_equal(ipc_chan_read(&b, buf, MAX_READS, &table, &s, 0), IPC_READ_IDLE);
        assert_int_equal(s.n, round * CORKED_PACKETS); /* nothing before the flush */
        assert_int_equal(ipc_chan_flush(&a), 0);
        assert_false(ipc_chan_waiting(&a));
        assert_int_equal(ipc_chan_read(&b, buf, MAX_READS, &table, &s, 0), IPC_READ_IDLE);
        assert_int_equal(s.n, (round + 1) * CORKED_PACKETS);
        char last[TEXT_MAX];
        int n = snprintf(last, sizeof last, "chat %d.%d", round, CORKED_PACKETS);
        assert_int_equal(s.text_len, (size_t)n);
        assert_memory_equal(s.text, last, (size_t)n);
    }
    for (int t = 1; t <= 2 * CORKED_PACKETS; t++)
        assert_int_equal(s.token[t - 1], t);
    ipc_chan_close(&a);
    ipc_chan_close(&b);
    free(buf);
}

static void test_too_large_is_refused_at_the_sender(void **state)
{
    (void)state;
    struct ipc_chan a, b;
    make_pair(&a, &b);
    char *big = calloc(1, IPC_MAX_PACKET);
    assert_non_null(big);
    struct ipc_deliver d = { .token = 1 };
    assert_int_equal(ipc_chan_send(&a, IPC_DELIVER, &d, big, IPC_MAX_PACKET), -1);
    assert_int_equal(errno, EMSGSIZE);
    assert_int_equal(ipc_chan_send(&a, IPC_DELIVER, &d, "ok", 2), 0); /* the link is fine */
    ipc_chan_close(&a);
    ipc_chan_close(&b);
    free(big);
}

/* A packet built by hand: header, then n bytes of body+tail. */
static size_t forge(char *pkt, uint32_t type, uint32_t len_field, size_t n)
{
    struct ipc_hdr h = { .type = type, .len = len_field };
    memcpy(pkt, &h, sizeof h);
    memset(pkt + sizeof h, 0, n);
    return sizeof h + n;
}

static void test_decoder_rules(void **state)
{
    (void)state;
    char *pkt = packet_buf();
    struct ipc_msg m;
    size_t n = forge(pkt, IPC_CONFIRM, sizeof(struct ipc_confirm), sizeof(struct ipc_confirm));
    assert_null(ipc_decode(pkt, n, -1, &table, &m));
    assert_int_equal(m.tail_len, 0);
    assert_non_null(ipc_decode(pkt, 3, -1, &table, &m)); /* shorter than a header */
    n = forge(pkt, IPC_CONFIRM, sizeof(struct ipc_confirm) + 1, sizeof(struct ipc_confirm));
    assert_non_null(ipc_decode(pkt, n, -1, &table, &m)); /* length field lies */
    n = forge(pkt, IPC_CONFIRM, 4, 4);
    assert_non_null(ipc_decode(pkt, n, -1, &table, &m)); /* payload too short */
    n = forge(pkt, IPC_CONFIRM, sizeof(struct ipc_confirm) + 2, sizeof(struct ipc_confirm) + 2);
    assert_non_null(ipc_decode(pkt, n, -1, &table, &m)); /* CONFIRM has no tail */
    n = forge(pkt, IPC_NUMSUB, sizeof(struct ipc_token) + 6, sizeof(struct ipc_token) + 6);
    assert_non_null(ipc_decode(pkt, n, -1, NULL, &m)); /* uids come in 4-byte units */
    n = forge(pkt, IPC_NUMSUB, sizeof(struct ipc_token) + 8, sizeof(struct ipc_token) + 8);
    assert_null(ipc_decode(pkt, n, -1, NULL, &m));
    assert_int_equal(m.tail_len, 8);
    assert_non_null(ipc_decode(pkt, n, -1, &table, &m)); /* not accepted on this link */
    n = forge(pkt, 999, 0, 0);
    assert_non_null(ipc_decode(pkt, n, -1, NULL, &m)); /* unknown type */
    n = forge(pkt, 0, 0, 0);
    assert_non_null(ipc_decode(pkt, n, -1, NULL, &m));
    n = forge(pkt, IPC_NEW_PEER, sizeof(struct ipc_new_peer), sizeof(struct ipc_new_peer));
    assert_non_null(ipc_decode(pkt, n, -1, &table, &m)); /* descriptor missing */
    n = forge(pkt, IPC_CONFIRM, sizeof(struct ipc_confirm), sizeof(struct ipc_confirm));
    assert_non_null(ipc_decode(pkt, n, 0, &table, &m)); /* unexpected descriptor */
    assert_string_equal(ipc_type_name(IPC_PUBLISHED), "PUBLISHED");
    assert_string_equal(ipc_type_name(12345), "unknown");
    free(pkt);
}

/* A malformed packet is fatal for the receiver: it aborts (and is respawned). */
static void test_malformed_packet_is_fatal(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(ipc_pair(sv), 0);
    char pkt[64];
    size_t n = forge(pkt, IPC_CONFIRM, 2, 2);
    assert_int_equal(send(sv[0], pkt, n, 0), (ssize_t)n);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        log_set_level(LOG_LEVEL_ERROR);
        signal(SIGABRT, SIG_DFL);
        struct ipc_chan ch;
        ipc_chan_init(&ch, sv[1]);
        char *buf = packet_buf();
        struct seen s = { .fd = -1 };
        ipc_chan_read(&ch, buf, 10, &table, &s, 0);
        _exit(0); /* not reached when the packet is refused */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    close(sv[0]);
    close(sv[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_packet_reaches_its_handler),
        cmocka_unit_test(test_packets_after_reset_are_read),
        cmocka_unit_test(test_descriptor_passed),
        cmocka_unit_test(test_queue_keeps_order),
        cmocka_unit_test(test_corked_link_sends_on_flush),
        cmocka_unit_test(test_too_large_is_refused_at_the_sender),
        cmocka_unit_test(test_decoder_rules),
        cmocka_unit_test(test_malformed_packet_is_fatal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
