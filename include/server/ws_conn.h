/*
 * ws_conn.h - WebSocket connections in a worker: the `[websocket] listen`
 * socket and the conn.c transport that carries the protocol in text frames.
 *
 * The master opens the listening socket before it forks (ws_conn_listen);
 * every worker watches it with EPOLLEXCLUSIVE (ws_conn_start), like the TCP
 * listener.  A connection accepted there is an ordinary struct conn with the
 * WebSocket transport: its bytes go through ws_feed, each text message into
 * the same request framing and dispatch as TCP, and every object sent to it
 * leaves as one text frame.
 */
#ifndef QCHAT_SERVER_WS_CONN_H
#define QCHAT_SERVER_WS_CONN_H

#include "common/config.h"

struct worker;

/* Open `[websocket] listen` (before the fork); 0 when off or open, -1 on error (logged). */
int ws_conn_listen(const struct qc_config *cfg);
/* Close the listening socket in a process that does not accept (the relay). */
void ws_conn_unlisten(void);
/* A worker: watch the websocket listener, if there is one.  -1 on error. */
int ws_conn_start(struct worker *w);
/* A worker stops: no more websocket clients. */
void ws_conn_stop(struct worker *w);
/* The worker's tick: ping idle websockets, give up on silent ones. */
void ws_conn_tick(struct worker *w);

#endif
