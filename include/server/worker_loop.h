/*
 * worker_loop.h - a worker process: its event loop and what it reacts to.
 *
 * The top of a worker (see worker.h for the layers): it opens the event
 * sources, installs every layer's hooks, and turns events into calls: the
 * listening socket into new connections, client sockets into conn.c, peer
 * links into peer.c, the master's channel into config updates, new links
 * and operator kicks, signals into the stop.
 */
#ifndef QCHAT_SERVER_WORKER_LOOP_H
#define QCHAT_SERVER_WORKER_LOOP_H

#include <stdint.h>

#include "common/config.h"
#include "server/guard.h"
#include "server/online.h"
#include "server/worker.h"

/* Entry point after fork; never returns.  peer_fds has ONLINE_MAX_WORKERS + 1
   entries: the links to the other workers, then the relay's (-1: none). */
void worker_main(uint32_t index, uint32_t nworkers, int listen_fd, int channel_fd,
                 const int *peer_fds, const struct qc_config *cfg, struct online_table *online,
                 struct guard *guard, struct seqtab *seqtab, struct journal *journal)
    __attribute__((noreturn));

/*
 * The parts of a worker that do not depend on the master: buffers, epoll set,
 * storage, routing tables, hashing threads.  worker_main calls it; so does
 * the fuzz target, which then drives connections by hand.  0 or -1.
 */
int worker_setup(struct worker *w, uint32_t index, const struct qc_config *cfg,
                 struct online_table *online, struct guard *guard);
/* Finish the password jobs that came back (the eventfd was readable). */
void worker_finish_crypt_jobs(struct worker *w);
/* End of a loop turn: write pending output, free closed connections. */
void worker_end_turn(struct worker *w);

#endif
