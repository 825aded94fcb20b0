/*
 * fuzz_requests.c - libFuzzer target: arbitrary bytes through the same
 * framing, decoding and request dispatch a worker uses.
 *
 * One worker is set up once (worker_setup: a temporary SQLite file, the
 * online table, the hashing threads at the lowest cost).  Each input is one
 * client connection over a socketpair: its bytes are fed in chunks whose
 * size the first byte picks (so requests split across reads are exercised),
 * password jobs are waited for, output is written and drained, then the
 * connection is closed.  Storage persists across inputs, so a corpus entry
 * that registers and logs in reaches the chat, friend and group handlers.
 */
#include <errno.h>
#include <poll.h>
#include <time.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/config.h"
#include "common/log.h"
#include "server/conn.h"
#include "server/guard.h"
#include "server/online.h"
#include "server/proc.h"
#include "server/storage.h"
#include "server/worker_loop.h"
#include "worker_setup.h"

#define FUZZ_MAX_INPUT   (256 * 1024)
#define FUZZ_JOB_WAIT_MS 10000 /* a password job at cost 1 takes milliseconds */

static struct worker worker;
static int ready;

static void setup_once(void)
{
    fuzz_worker_setup(&worker, 1);
    ready = 1;
}

static void drain(int fd)
{
    char sink[65536];
    while (recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0)
        ;
}

/* Storage work queued and not yet completed (its callbacks not run). */
static bool storage_outstanding(void)
{
    struct storage_stats st;
    storage_get_stats(worker.storage, &st);
    return st.outstanding > 0;
}

/*
 * Password jobs and store work run on threads: wait for them like the loop
 * would, until the connection reads again and every store callback ran (so
 * nothing an input allocated is still in flight when it ends).  poll is
 * retried on EINTR (libFuzzer's -timeout ticks with SIGALRM).
 */
static void wait_for_jobs(struct conn *c, int peer)
{
    int64_t deadline = clock_now_ms() + FUZZ_JOB_WAIT_MS;
    while ((c->state == CONN_OPEN && c->busy) || storage_outstanding()) {
        struct pollfd p[2] = { { .fd = worker.crypt_fd, .events = POLLIN },
                               { .fd = storage_fd(worker.storage), .events = POLLIN } };
        int n = poll(p, 2, FUZZ_JOB_WAIT_MS);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 && clock_now_ms() >= deadline) {
            fprintf(stderr, "fuzz: job lost: conn %u busy, state %d, held %zu bytes\n", c->slot,
                    c->state, buf_used(&c->held));
            abort(); /* a job that never comes back is a bug */
        }
        worker_finish_crypt_jobs(&worker);
        storage_complete(worker.storage);
        worker_end_turn(&worker);
        drain(peer);
    }
}

/* Set up before fuzzing starts, outside libFuzzer's per-input leak check. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    setup_once();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready)
        setup_once();
    if (size == 0 || size > FUZZ_MAX_INPUT)
        return 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    struct conn *c = conn_open(&worker, sv[0]);
    if (c == NULL)
        abort();
    size_t chunk = data[0] ? data[0] : size;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    while (n > 0 && c->state == CONN_OPEN) {
        size_t k = n < chunk ? n : chunk;
        conn_feed(&worker, c, p, k);
        wait_for_jobs(c, sv[1]);
        worker_end_turn(&worker);
        drain(sv[1]);
        p += k;
        n -= k;
    }
    if (c->state != CONN_DEAD)
        conn_close(&worker, c, "fuzz input done");
    worker_end_turn(&worker);
    close(sv[1]);
    return 0;
}
