/*
 * ipc.h - small typed messages between qchatd's processes.
 *
 * Every pair of processes that talk has a socketpair(SOCK_SEQPACKET): the
 * master and each worker (the "channel"), and each pair of workers (the
 * "peer" links used to hand chats over).  One message is one packet: a fixed
 * header and an optional payload (the JSON text of a forwarded message, or a
 * config block).  A file descriptor may ride along (SCM_RIGHTS) when the
 * master gives a worker the link to a respawned peer.
 */
#ifndef QCHAT_SERVER_IPC_H
#define QCHAT_SERVER_IPC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum ipc_type {
    IPC_DELIVER = 1, /* worker->worker: payload for (uid, slot, gen); token to confirm */
    IPC_CONFIRM, /* worker->worker, worker->relay: token is safe (written or stored); err in flags */
    IPC_KICK,    /* worker->worker: session (uid, slot, gen) was taken over */
    IPC_NEW_PEER,  /* master->worker: fd is the link to worker `uid` (its index) */
    IPC_CONFIG,    /* master->worker: payload is a struct qc_config (HUP) */
    IPC_KICK_USER, /* master->worker: qchatctl kick uid */
    /* worker <-> relay (the relay's link is peer RELAY_PEER in every worker) */
    IPC_SUB,          /* worker->relay: uid now has a session on this node */
    IPC_UNSUB,        /* worker->relay: uid has no session on this node any more */
    IPC_PUBLISH,      /* worker->relay: payload for uid elsewhere; flags IPC_F_*; token */
    IPC_PUBLISHED,    /* relay->worker: token's PUBLISH reached `gen` receivers; flags: error */
    IPC_NUMSUB,       /* worker->relay: payload int32 uids; token */
    IPC_NUMSUB_REPLY, /* relay->worker: payload one byte per uid (1 online elsewhere); flags: error */
    IPC_SUBSCRIBED, /* relay->worker: the SUB with this token is confirmed by Redis; flags: error */
};

/* DELIVER flags */
#define IPC_F_CHAT   0x1 /* a chat: store offline if the session is gone */
#define IPC_F_NOTICE 0x2 /* a notice (presence): drop if the session is gone */
#define IPC_F_KICK   0x4 /* PUBLISH: the user logged in on this node; others kick */
#define IPC_F_STORE  0x8 /* DELIVER from the relay: its worker died; store it offline */

/* The relay's index among a worker's peers, and as a "from" in packets. */
#define RELAY_PEER 64 /* == ONLINE_MAX_WORKERS */

struct ipc_hdr {
    uint16_t type;
    uint16_t from;  /* sender's worker index */
    uint32_t token; /* DELIVER/CONFIRM: the sender's hand-off handle */
    int32_t uid;
    uint32_t slot;
    uint32_t gen;
    uint32_t flags; /* DELIVER: IPC_F_*; CONFIRM: error number (0 = safe) */
};

/* Largest packet: header + a forwarded message or a config block. */
#define IPC_MAX_PACKET (256 * 1024)

/* Create a SOCK_SEQPACKET pair, non-blocking, close-on-exec.  0 or -1. */
int ipc_pair(int sv[2]);
/* Send one message; 0, or -1 with errno (EAGAIN when the link is full). */
int ipc_send(int fd, const struct ipc_hdr *h, const void *payload, size_t len, int pass_fd);
/*
 * Receive one message: payload length (>= 0), or -1 with errno (EAGAIN: none
 * waiting), or -2 on end of stream.  *passed_fd is -1 unless one came along.
 */
ssize_t ipc_recv(int fd, struct ipc_hdr *h, void *payload, size_t cap, int *passed_fd);

#endif
