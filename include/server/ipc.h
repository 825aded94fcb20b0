/*
 * ipc.h - the channel between qchatd's processes, in the manner of OpenBSD's
 * imsg.
 *
 * Every pair of processes that talk has a socketpair(SOCK_SEQPACKET): the
 * master and each child (the "channel": config, new links, operator kicks),
 * each pair of workers (the "peer" links that hand chats over), and the
 * relay and each worker.  One packet is one message: a header (type and
 * length), the type's fixed payload struct, and for some types a variable
 * tail (the JSON text of a message, a list of user ids).  A descriptor may
 * ride along (SCM_RIGHTS) with IPC_NEW_PEER and IPC_REVOKE_USER only.
 *
 * struct ipc_chan is one end: packets the socket cannot take yet wait in a
 * queue (ipc_chan_flush when the socket is writable again), and
 * ipc_chan_read hands each packet received to the receiver's handler for its
 * type.  Every packet is checked against its type's rule (payload size,
 * tail unit and size, descriptor) and against what the receiver accepts on
 * that link before any handler sees it; one that fails is fatal for the
 * receiving process (qc_fatal: it is respawned): a sibling that sends
 * garbage is a bug, and a state built on a misread packet cannot be trusted.
 * A handler still range-checks every index and handle the packet names.
 */
#ifndef QCHAT_SERVER_IPC_H
#define QCHAT_SERVER_IPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/buf.h"

enum ipc_type {
    IPC_DELIVER = 1,  /* worker/relay -> worker: ipc_deliver + text */
    IPC_CONFIRM,      /* worker -> worker/relay: ipc_confirm */
    IPC_KICK,         /* worker -> worker: ipc_session was taken over */
    IPC_NEW_PEER,     /* master -> worker/relay: ipc_new_peer + the link's descriptor */
    IPC_CONFIG,       /* master -> worker/relay: struct qc_config (HUP) */
    IPC_KICK_USER,    /* master -> worker: ipc_user (qchatctl kick) */
    IPC_SUB,          /* worker -> relay: ipc_sub, uid has a session on this node */
    IPC_UNSUB,        /* worker -> relay: ipc_user has no session on this node any more */
    IPC_PUBLISH,      /* worker -> relay: ipc_publish + text, for uid elsewhere */
    IPC_PUBLISHED,    /* relay -> worker: ipc_published, the PUBLISH's receiver count */
    IPC_NUMSUB,       /* worker -> relay: ipc_token + int32 uids */
    IPC_NUMSUB_REPLY, /* relay -> worker: ipc_answer + one byte per uid (1: online elsewhere) */
    IPC_SUBSCRIBED,   /* relay -> worker: ipc_answer, Redis confirmed the SUB with token */
    IPC_REVOKE_USER,  /* master -> worker: ipc_user + the qchatctl connection (qchatctl revoke) */
    IPC_PURGE,        /* master -> worker: ipc_token, run the retention purge now (qchatctl) */
    IPC_RESYNC,  /* relay -> worker: ipc_token (0), Redis is back: fill sessions from the log */
    IPC_CLAIM,   /* worker -> relay: ipc_claim + device, a new session under [session] mode */
    IPC_CLAIMED, /* relay -> worker: ipc_answer, failed: IPC_CLAIM_OK / _UNAVAILABLE / _REFUSED */
    IPC_SESSION_END,   /* worker -> relay: ipc_session, that session of the node ended */
    IPC_DEVICES,       /* worker -> relay: ipc_query, the account's sessions cluster-wide */
    IPC_DEVICES_REPLY, /* relay -> worker: ipc_answer + ipc_device records (each + device) */
    IPC_TYPE_COUNT
};

/* ipc_deliver.flags and ipc_publish.kind */
#define IPC_F_CHAT   0x1 /* a chat: store offline if the session is gone */
#define IPC_F_NOTICE 0x2 /* a notice (presence): drop if the session is gone */
#define IPC_F_KICK   0x4 /* SUB: the user logged in on this node; older sessions elsewhere go */
#define IPC_F_STORE  0x8 /* DELIVER from the relay: its worker died; store it offline */
#define IPC_F_EXACT \
    0x10 /* DELIVER: the sender addressed each session: none stands in for another */

#define IPC_F_OTHERS 0x20 /* PUBLISH: for the user's sessions on the other nodes only */
/* ipc_answer.failed of IPC_CLAIMED */
#define IPC_CLAIM_OK          0
#define IPC_CLAIM_UNAVAILABLE 1 /* Redis did not answer: the mode held on this node only */
#define IPC_CLAIM_REFUSED     2 /* [session] mode = refuse: a session elsewhere */
/* The relay's index among a worker's peers. */
#define RELAY_PEER 64 /* == ONLINE_MAX_WORKERS */

/* Largest packet: header + payload struct + tail. */
#define IPC_MAX_PACKET (256 * 1024)

struct ipc_hdr {
    uint32_t type;
    uint32_t len; /* payload struct + tail, in bytes */
};

/* A chat or notice for the session (uid, slot, gen); token names the sender's copy. */
struct ipc_deliver {
    int32_t uid;
    uint32_t slot, gen;
    uint32_t token; /* 0: nobody waits for a confirmation */
    uint32_t flags; /* IPC_F_CHAT, IPC_F_NOTICE, IPC_F_STORE, IPC_F_EXACT */
};

/* The delivery named by token is safe (err 0: written or stored) or failed. */
struct ipc_confirm {
    uint32_t token;
    int32_t err;
};

struct ipc_session {
    int32_t uid;
    uint32_t slot, gen;
};

struct ipc_new_peer {
    uint32_t peer; /* a worker index, or RELAY_PEER */
};

struct ipc_user {
    int32_t uid;
};

struct ipc_sub {
    int32_t uid;
    uint32_t token; /* 0: no IPC_SUBSCRIBED wanted */
    uint32_t flags; /* IPC_F_KICK: a new session; claim the account cluster-wide (relay.c) */
};

struct ipc_publish {
    int32_t uid;
    uint32_t token; /* chats: the worker's copy, answered by IPC_PUBLISHED */
    uint32_t kind;  /* IPC_F_CHAT, IPC_F_NOTICE or IPC_F_KICK */
};

struct ipc_published {
    uint32_t token;
    uint32_t receivers;
    int32_t failed; /* 1: Redis unavailable */
};

/* A new session of uid (worker's slot and generation) to claim cluster-wide (sessreg.h). */
struct ipc_claim {
    int32_t uid;
    uint32_t token;   /* answered by IPC_CLAIMED */
    uint32_t gen;     /* the session's generation on this node */
    uint32_t mode;    /* enum online_mode */
    uint32_t max;     /* [session] max_devices */
    uint32_t named;   /* 1: the login named its device */
    int64_t since_ms; /* login time, epoch ms */
};
struct ipc_query {
    uint32_t token;
    int32_t uid;
};
/* One session in IPC_DEVICES_REPLY's tail, followed by device_len bytes of its device. */
struct ipc_device {
    int32_t node;
    uint32_t gen;
    int64_t since_ms;
    uint32_t device_len;
    uint32_t pad;
};
struct ipc_token {
    uint32_t token;
};

struct ipc_answer {
    uint32_t token;
    int32_t failed;
};

/* A packet as received: checked against its type's rule. */
struct ipc_msg {
    uint32_t type;
    const void *body; /* the type's payload struct (aligned) */
    const char *tail; /* the variable part, tail_len bytes (never NULL) */
    size_t tail_len;
    int fd; /* the descriptor that came along, or -1 */
};

/* One end of a link. */
struct ipc_chan {
    int fd;           /* -1: closed */
    struct buf queue; /* packets the socket did not take yet: [uint32 len][packet]... */
    bool broken;      /* a send failed: its last packets are being read, sends refused */
    bool corked;      /* sends wait in queue for ipc_chan_flush: one sendmmsg per loop round */
};

/*
 * What a process accepts on one kind of link: a handler per type (NULL: that
 * type is a protocol violation here).  link is the receiver's own name for
 * the link (a worker index, RELAY_PEER), never a value the sender chose.
 */
struct ipc_handlers {
    const char *from; /* "worker", "relay", "master": for messages */
    void (*fn[IPC_TYPE_COUNT])(void *ctx, uint32_t link, const struct ipc_msg *m);
};

enum ipc_read_result {
    IPC_READ_IDLE = 0, /* nothing more waiting */
    IPC_READ_MORE,     /* max_packets read; more may wait */
    IPC_READ_CLOSED,   /* end of stream or a broken link: the caller closes it */
};

/* "DELIVER", "CONFIRM", ...; "unknown" for a type without a rule. */
const char *ipc_type_name(uint32_t type);

/* Create a SOCK_SEQPACKET pair, non-blocking, close-on-exec.  0 or -1. */
int ipc_pair(int sv[2]);

void ipc_chan_init(struct ipc_chan *ch, int fd);
/* Close the descriptor and drop what was queued. */
void ipc_chan_close(struct ipc_chan *ch);
/*
 * Send one packet (body is the type's payload struct, its size given by the
 * type), or queue it behind those already waiting.  0: sent or queued
 * (ipc_chan_waiting says which); -1 with errno: EMSGSIZE or ENOMEM (this
 * packet cannot go, the link is fine), else the link is closed or broken.
 */
int ipc_chan_send(struct ipc_chan *ch, uint32_t type, const void *body, const void *tail,
                  size_t tail_len);
/* Send a packet with a descriptor now (never queued): 0, or -1 with errno (EAGAIN: full). */
int ipc_chan_send_fd(struct ipc_chan *ch, uint32_t type, const void *body, int fd);
/*
 * Corked: every send is queued, and the owner calls ipc_chan_flush once per
 * event-loop round (before it sleeps), which hands the round's packets to
 * the kernel with one sendmmsg: one system call, and one wake-up of the
 * receiver, instead of one per packet.
 */
void ipc_chan_cork(struct ipc_chan *ch, bool on);
/* Packets wait for the socket to become writable (or for a corked flush). */
bool ipc_chan_waiting(const struct ipc_chan *ch);
/* Write what waits: 0 (all written or some still waiting), -1 the link is broken. */
int ipc_chan_flush(struct ipc_chan *ch);
/*
 * Read up to max_packets packets into buf (IPC_MAX_PACKET bytes, aligned)
 * and hand each to its handler.  A packet that breaks its rule or is not
 * accepted here is fatal (qc_fatal).
 */
enum ipc_read_result ipc_chan_read(struct ipc_chan *ch, char *buf, int max_packets,
                                   const struct ipc_handlers *hs, void *ctx, uint32_t link);

/*
 * Check packet pkt[0..n) (with fd, -1 for none) against its type's rule and
 * the handler table hs (NULL: any valid type); fill m.  NULL when it is
 * valid, else why it is not.  pkt must be aligned for the payload structs.
 */
const char *ipc_decode(const char *pkt, size_t n, int fd, const struct ipc_handlers *hs,
                       struct ipc_msg *m);
/* Decode pkt against hs and hand it to its handler: NULL, or why it was refused. */
const char *ipc_dispatch(const char *pkt, size_t n, int fd, const struct ipc_handlers *hs,
                         void *ctx, uint32_t link);

#endif
