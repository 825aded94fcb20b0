/*
 * peer.h - a worker's links to the other workers and to the relay.
 *
 * Each link is an ipc_chan (see ipc.h): packets the socket cannot take yet
 * wait in its queue, written when epoll says the link is writable.  What a
 * worker accepts on a link depends on who is at the other end (another
 * worker: DELIVER, CONFIRM, KICK; the relay: DELIVER, KICK, PUBLISHED,
 * NUMSUB_REPLY, SUBSCRIBED); anything else is fatal.  A link that breaks is
 * read to its end first (the confirmations queued in it count), then every
 * hand-off still unsettled on it is stored offline.
 */
#ifndef QCHAT_SERVER_PEER_H
#define QCHAT_SERVER_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct worker;
struct ipc_handlers;

/* Send a packet (see ipc.h) to peer, queued if the link is full.  0, or -1: not sent. */
int peer_send(struct worker *w, uint32_t peer, uint32_t type, const void *body, const void *tail,
              size_t tail_len);
/* Tell origin (another worker or the relay) that its delivery token is safe or failed. */
void peer_confirm(struct worker *w, uint32_t origin, uint32_t token, int err);
/* Start reading the link fd to peer (at start: the links the master made before the fork). */
int peer_watch(struct worker *w, uint32_t peer, int fd);
/* The master gave us a (new) link to peer. */
void peer_adopt(struct worker *w, uint32_t peer, int fd);
/* Link events from the loop. */
void peer_input(struct worker *w, uint32_t peer);
void peer_output(struct worker *w, uint32_t peer);
/* The link is gone: close it, store what it never settled. */
void peer_lost(struct worker *w, uint32_t peer);
/* What a worker accepts on the link to peer (a worker index or RELAY_PEER); fuzz target too. */
const struct ipc_handlers *peer_handlers(uint32_t peer);
/* Packets wait in some link's queue. */
bool peer_output_waiting(struct worker *w);
/* At exit: one last attempt to write every queue. */
void peer_flush_all(struct worker *w);
/* Before the loop sleeps: the round's packets on every link leave (one sendmmsg each). */
void peer_flush_corked(struct worker *w);

#endif
