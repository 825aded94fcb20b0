/*
 * relay.h - the relay process: the node's only contact with Redis.
 *
 * One per node when [redis] host is set.  It holds a link (socketpair) to
 * every worker and two hiredis connections driven by its own epoll loop:
 * a subscriber (one channel per user online on this node) and a publisher
 * (messages for users online elsewhere).  Workers never block on Redis.
 */
#ifndef QCHAT_SERVER_RELAY_H
#define QCHAT_SERVER_RELAY_H

#include <stdint.h>
#include "common/config.h"
#include "server/online.h"

/* Redis channel of a user: "qchat:u:<id>". */
#define RELAY_CHANNEL_PREFIX "qchat:u:"

/* Entry point after fork; never returns.  worker_fds[k] is the link to worker k (-1: none). */
void relay_main(uint32_t nworkers, int channel_fd, const int *worker_fds,
                const struct qc_config *cfg, struct online_table *online) __attribute__((noreturn));

/* For qchatd -t: connect, PING, disconnect.  0 or -1 with err. */
int relay_check_redis(const struct qc_config *cfg, char *err, size_t errlen);

#endif
