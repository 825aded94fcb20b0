/*
 * test_ipc.c - unit tests for the packets between qchatd's processes.
 *
 * Covers: a packet and its payload arrive whole; end of stream; a peer that
 * closes while packets of ours are still unread in its queue (the kernel
 * then reports ECONNRESET once, ahead of the packets the peer sent before it
 * closed: those confirmations must still be read, or a chat the peer wrote
 * would be stored offline too and delivered twice - the SIGTERM duplicate of
 * issue 10); a passed descriptor arrives; a packet too large for the buffer
 * is refused as malformed.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "server/ipc.h"

#define CONFIRMS 5
#define SMALL    8

static void make_pair(int sv[2])
{
    assert_int_equal(ipc_pair(sv), 0);
}

static void send_confirm(int fd, uint32_t token)
{
    struct ipc_hdr h = { .type = IPC_CONFIRM, .from = 1, .token = token };
    assert_int_equal(ipc_send(fd, &h, NULL, 0, -1), 0);
}

static void test_packet_and_payload(void **state)
{
    (void)state;
    int sv[2];
    make_pair(sv);
    struct ipc_hdr h = { .type = IPC_DELIVER, .from = 2, .token = 7, .uid = 42 };
    assert_int_equal(ipc_send(sv[0], &h, "hello", 5, -1), 0);
    struct ipc_hdr got;
    char payload[64];
    int fd;
    assert_int_equal(ipc_recv(sv[1], &got, payload, sizeof payload, &fd), 5);
    assert_int_equal(fd, -1);
    assert_int_equal(got.type, IPC_DELIVER);
    assert_int_equal(got.token, 7);
    assert_int_equal(got.uid, 42);
    assert_memory_equal(payload, "hello", 5);
    assert_int_equal(ipc_recv(sv[1], &got, payload, sizeof payload, &fd), -1);
    assert_int_equal(errno, EAGAIN);
    close(sv[0]);
    assert_int_equal(ipc_recv(sv[1], &got, payload, sizeof payload, &fd), -2);
    close(sv[1]);
}

/* The peer sends confirmations, leaves one packet of ours unread and exits. */
static void test_packets_after_reset_are_read(void **state)
{
    (void)state;
    int sv[2];
    make_pair(sv);
    for (uint32_t t = 1; t <= CONFIRMS; t++)
        send_confirm(sv[1], t);
    struct ipc_hdr deliver = { .type = IPC_DELIVER, .from = 0, .token = 99 };
    assert_int_equal(ipc_send(sv[0], &deliver, "x", 1, -1), 0);
    close(sv[1]); /* with our DELIVER unread: the kernel sets ECONNRESET on sv[0] */

    char payload[64];
    struct ipc_hdr got;
    int fd;
    for (uint32_t t = 1; t <= CONFIRMS; t++) {
        assert_int_equal(ipc_recv(sv[0], &got, payload, sizeof payload, &fd), 0);
        assert_int_equal(got.type, IPC_CONFIRM);
        assert_int_equal(got.token, t);
    }
    assert_int_equal(ipc_recv(sv[0], &got, payload, sizeof payload, &fd), -2);
    close(sv[0]);
}

static void test_descriptor_passed(void **state)
{
    (void)state;
    int sv[2], other[2];
    make_pair(sv);
    make_pair(other);
    struct ipc_hdr h = { .type = IPC_NEW_PEER };
    assert_int_equal(ipc_send(sv[0], &h, NULL, 0, other[1]), 0);
    struct ipc_hdr got;
    char payload[SMALL];
    int fd;
    assert_int_equal(ipc_recv(sv[1], &got, payload, sizeof payload, &fd), 0);
    assert_true(fd >= 0);
    send_confirm(other[0], 3);
    int none;
    assert_int_equal(ipc_recv(fd, &got, payload, sizeof payload, &none), 0);
    assert_int_equal(none, -1);
    assert_int_equal(got.token, 3);
    close(fd);
    close(other[0]);
    close(other[1]);
    close(sv[0]);
    close(sv[1]);
}

static void test_truncated_packet_is_malformed(void **state)
{
    (void)state;
    int sv[2];
    make_pair(sv);
    struct ipc_hdr h = { .type = IPC_DELIVER };
    char big[SMALL * 4];
    memset(big, 'a', sizeof big);
    assert_int_equal(ipc_send(sv[0], &h, big, sizeof big, -1), 0);
    struct ipc_hdr got;
    char payload[SMALL];
    int fd;
    assert_int_equal(ipc_recv(sv[1], &got, payload, sizeof payload, &fd), -1);
    assert_int_equal(errno, EBADMSG);
    close(sv[0]);
    close(sv[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_packet_and_payload),
        cmocka_unit_test(test_packets_after_reset_are_read),
        cmocka_unit_test(test_descriptor_passed),
        cmocka_unit_test(test_truncated_packet_is_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
