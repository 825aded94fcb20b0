/*
 * crypt_pool.h - password hashing off the event loop.
 *
 * yescrypt costs milliseconds to tens of milliseconds per call; run on a
 * worker's loop it would stall every chat of that worker during a login
 * storm.  Each worker starts security.hash_threads threads that take jobs
 * from a queue, and report completion through an eventfd the loop watches.
 * Jobs carry copies of the secrets, wiped (explicit_bzero) before release.
 */
#ifndef QCHAT_SERVER_CRYPT_POOL_H
#define QCHAT_SERVER_CRYPT_POOL_H

#include <stdbool.h>
#include <stdint.h>
#include "common/password.h"
#include "common/proto.h"
#include "server/service_session.h"

struct worker;

enum crypt_job_kind {
    CRYPT_VERIFY, /* plain vs stored; on success re-hash a seed plaintext or an old cost */
    CRYPT_HASH,   /* hash plain with cost */
    CRYPT_CHANGE, /* PASSWORD_MSG: verify plain vs stored, then hash newplain */
};

struct crypt_job {
    enum crypt_job_kind kind;
    /* who waits: the connection (slot, cgen) and the request */
    uint32_t slot, cgen;
    int msgid;
    char seq[QC_SEQ_MAX + 1];
    bool has_seq;
    struct login_wish wish;             /* LOGIN: device, token, pushes */
    char newplain[QC_PASSWORD_MAX + 1]; /* CRYPT_CHANGE: the new password */
    int32_t uid;                        /* the user found, 0: no such user */
    int32_t asked_uid;                  /* the id the client sent */
    char name[QC_NAME_MAX + 1];
    int cost;
    /* secrets in, results out */
    char plain[QC_PASSWORD_MAX + 1];
    char stored[PASSWORD_HASH_MAX];
    bool ok;       /* verified / hashed */
    bool upgraded; /* hash holds a replacement (seed plaintext, old cost) */
    char hash[PASSWORD_HASH_MAX];
    struct crypt_job *next;
};

/* Start nthreads threads; returns the eventfd to watch, or -1. */
int crypt_pool_start(struct worker *w, int nthreads);
/* Queue a job (the pool owns it until it comes back from crypt_pool_done). */
void crypt_pool_submit(struct worker *w, struct crypt_job *job);
/* Finished jobs, oldest first (the eventfd was readable); caller frees them. */
struct crypt_job *crypt_pool_done(struct worker *w);
/* Wipe and free a job. */
void crypt_job_free(struct crypt_job *job);
/* Stop the threads (at exit). */
void crypt_pool_stop(struct worker *w);

#endif
