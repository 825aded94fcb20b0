/*
 * fuzz_ipc.c - libFuzzer target: arbitrary bytes as an internal packet,
 * through the same decoder and handlers a worker uses on its links.
 *
 * One worker is set up once (worker_setup: a temporary SQLite file, the
 * online table, no peers).  Each input is one packet: its first byte picks
 * the link it arrives on (another worker, or the relay), the rest is the
 * packet (header, payload struct, tail), copied into an aligned buffer as a
 * real receive would be.  A packet the decoder refuses is what would be
 * fatal in a real worker (checked here: the refusal has a reason, and
 * nothing was dispatched); one it accepts runs the real handler: DELIVER to
 * sessions that do not exist (stored offline), CONFIRM/PUBLISHED of unknown
 * hand-offs, KICK of unknown sessions, the relay's answers to no login.
 * Every index a packet names must be range-checked by those handlers: ASan
 * and UBSan report any that is not.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"
#include "server/guard.h"
#include "server/ipc.h"
#include "server/online.h"
#include "server/peer.h"
#include "server/worker_loop.h"
#include "worker_setup.h"

#define FUZZ_LINK_WORKER 1 /* a link to another worker (this one is worker 0) */

static struct worker worker;
static char *packet;
static int ready;

static void setup_once(void)
{
    packet = malloc(IPC_MAX_PACKET);
    if (packet == NULL)
        abort();
    fuzz_worker_setup(&worker, 2);
    ready = 1;
}

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
    if (size == 0 || size - 1 > IPC_MAX_PACKET)
        return 0;
    uint32_t link = data[0] & 1 ? RELAY_PEER : FUZZ_LINK_WORKER;
    size_t n = size - 1;
    memcpy(packet, data + 1, n);
    struct ipc_msg m;
    const char *refused = ipc_decode(packet, n, -1, peer_handlers(link), &m);
    const char *why = ipc_dispatch(packet, n, -1, peer_handlers(link), &worker, link);
    if ((refused == NULL) != (why == NULL))
        abort(); /* decode and dispatch disagree */
    if (why == NULL && (m.tail < packet || m.tail + m.tail_len > packet + n))
        abort(); /* an accepted packet's tail outside the packet */
    worker_end_turn(&worker);
    return 0;
}
