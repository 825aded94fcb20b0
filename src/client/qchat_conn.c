/*
 * qchat_conn.c - qchat's connection to the server: made when the user logs
 * in or registers (sitting at the menu costs nothing), closed at logout,
 * and restored when the server drops it.
 *
 * A login asks for a token ("token": true) and names this device
 * ("qchat-HOSTNAME"), so that a reconnect logs in again without the
 * password and replaces this device's old session instead of counting as
 * another device.  The token lives in memory for the process only; a
 * server that gives none gets the password again (kept only then, wiped
 * at logout and exit).
 *
 * When the connection ends while a session is wanted, one line says so
 * ("disconnected: reconnecting"), then attempts follow with a backoff
 * doubling from QCHAT_BACKOFF_FIRST_MS to QCHAT_BACKOFF_MAX_MS, each delay
 * jittered down to half so that a restarted server is not hit by every
 * client at once.  Success prints "reconnected: ..." and the messages that
 * came meanwhile; a refused token ends the session ("reconnect failed:
 * error N: TEXT").  A KICK (the account took this device over elsewhere)
 * is never answered by reconnecting, which would take it back.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qchat.h"

#define CONNECT_ERR_LEN 256

/* Incoming objects met while a request waits for its reply. */
static void print_skipped(void *arg, struct json_object *obj)
{
    out_incoming(arg, obj);
}

/* A new connection in q->c with its state reset; false (why in err) when none. */
static bool dial(struct qchat *q, char err[CONNECT_ERR_LEN])
{
    q->c = qclient_connect(q->host, q->port, QCHAT_CONNECT_TIMEOUT_MS, err, CONNECT_ERR_LEN);
    if (q->c == NULL)
        return false;
    qclient_set_skip_handler(q->c, print_skipped, q);
    q->broken = q->kicked = q->timed_out = false;
    q->last_send_ms = clock_now_ms();
    return true;
}

bool qconn_open(struct qchat *q)
{
    char err[CONNECT_ERR_LEN];

    if (q->c != NULL && q->broken)
        qconn_lost(q);
    if (q->c != NULL)
        return true;
    if (!dial(q, err)) {
        out_line(q, "error: %s", err);
        q->trouble = true;
        return false;
    }
    return true;
}

void qconn_close(struct qchat *q)
{
    if (q->c != NULL)
        qclient_close(q->c);
    q->c = NULL;
    q->broken = false;
}

void qconn_forget_credentials(struct qchat *q)
{
    explicit_bzero(q->token, sizeof q->token);
    explicit_bzero(q->password, sizeof q->password);
}

void qconn_keep_credentials(struct qchat *q, struct json_object *ack, const char *password)
{
    const char *token = qjson_str(ack, "token");

    if (token != NULL && strlen(token) <= QCHAT_TOKEN_MAX) {
        snprintf(q->token, sizeof q->token, "%s", token);
        explicit_bzero(q->password, sizeof q->password);
    } else if (password != NULL) {
        explicit_bzero(q->token, sizeof q->token);
        snprintf(q->password, sizeof q->password, "%s", password);
    }
}

int qconn_login(struct qchat *q, int32_t id, const char *password, const char *token,
                struct json_object **ack)
{
    struct qclient_login_opts o = {
        .password = password,
        .token = token,
        .device = q->device,
        .presence = true,
        .receipts = true,
        .typing = true,
        .want_token = true,
    };

    (void)qchat_seq(q); /* notes the send time for the heartbeat */
    return qclient_login_opts(q->c, id, &o, ack, q->reply_timeout_ms);
}

/* The delay before the next attempt: backoff_ms jittered into [half, whole]. */
static void plan_reconnect(struct qchat *q)
{
    int half = q->backoff_ms / 2;

    q->reconnect_at =
        clock_now_ms() + half + (half > 0 ? arc4random_uniform((uint32_t)half + 1) : 0);
    q->backoff_ms =
        q->backoff_ms >= QCHAT_BACKOFF_MAX_MS / 2 ? QCHAT_BACKOFF_MAX_MS : q->backoff_ms * 2;
}

void qconn_lost(struct qchat *q)
{
    bool was_connected = q->c != NULL;

    qconn_close(q);
    if (!was_connected)
        return;
    if (q->timed_out) /* "login timeout" already said it all */
        return;
    if (!q->logged_in || q->kicked) {
        out_line(q, "disconnected");
        if (q->kicked) {
            q->trouble = true;
            qconn_forget_credentials(q); /* the session is over: log in again */
        }
        q->logged_in = false;
        return;
    }
    out_line(q, "disconnected: reconnecting");
    q->trouble = true;
    q->backoff_ms = QCHAT_BACKOFF_FIRST_MS;
    plan_reconnect(q);
}

/* The session could not be restored: the user must log in again. */
static void give_up(struct qchat *q, int rc)
{
    out_line(q, "reconnect failed: error %d: %s", rc, qc_strerror(rc));
    q->logged_in = false;
    q->reconnect_at = 0;
    qconn_forget_credentials(q);
    qconn_close(q);
}

/* Errors that say the credentials will never work again. */
static bool credentials_refused(int rc)
{
    return rc == QC_EAUTH || rc == QC_EBADTOKEN || rc == QC_ENOUSER;
}

/* One attempt: connect and log in with the token (or password).  true on success. */
static bool reconnect_now(struct qchat *q)
{
    struct json_object *ack = NULL;
    char err[CONNECT_ERR_LEN];
    int rc;

    q->reconnect_at = 0;
    if (!dial(q, err)) {
        plan_reconnect(q);
        return false;
    }
    rc = qconn_login(q, q->my_id, q->password, q->token[0] != '\0' ? q->token : NULL, &ack);
    if (rc == 0) {
        qconn_keep_credentials(q, ack, NULL);
        q->trouble = false;
        q->backoff_ms = QCHAT_BACKOFF_FIRST_MS;
        out_relogin(q, ack);
        json_object_put(ack);
        conv_flush_reads(q); /* the messages that came meanwhile are shown now */
        return true;
    }
    json_object_put(ack);
    if (rc > 0 && credentials_refused(rc)) {
        give_up(q, rc);
        return false;
    }
    qconn_close(q); /* shutting down, storage down, rate limited, lost: try later */
    plan_reconnect(q);
    return false;
}

void qconn_reconnect_if_due(struct qchat *q)
{
    if (q->c == NULL && q->logged_in && q->reconnect_at > 0 && clock_now_ms() >= q->reconnect_at)
        (void)reconnect_now(q);
}

bool qconn_ready(struct qchat *q)
{
    if (q->c != NULL && q->broken)
        qconn_lost(q);
    if (q->c != NULL)
        return true;
    if (!q->logged_in) {
        out_line(q, "error: not logged in");
        return false;
    }
    if (reconnect_now(q))
        return true;
    if (q->logged_in)
        out_line(q, "error: not connected (reconnecting in %.1f s)",
                 (double)(q->reconnect_at - clock_now_ms()) / 1000.0);
    return false;
}
