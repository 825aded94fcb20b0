/*
 * proto.c - texts for the protocol's stable error numbers.
 *
 * The texts travel in "errmsg" next to "errno"; clients should test the
 * number, the text is for people.  Error 1 keeps the seed server's wording.
 */
#include <stddef.h>

#include "common/proto.h"

static const char *const error_texts[QC_ERR_MAX + 1] = {
    [QC_OK] = "ok",
    [QC_EAUTH] = "id or password is invalid!",
    [QC_ERESERVED2] = "this account is using, input another!",
    [QC_ENAMETAKEN] = "name already taken",
    [QC_EMALFORMED] = "malformed JSON",
    [QC_ETOOBIG] = "message too big",
    [QC_EBADREQ] = "bad request: missing or mistyped field",
    [QC_EUNKNOWN] = "unknown msgid",
    [QC_ENOTLOGGEDIN] = "not logged in",
    [QC_ENOUSER] = "no such user",
    [QC_ENOGROUP] = "no such group",
    [QC_ENOTMEMBER] = "not a member of the group",
    [QC_EALREADY] = "already friends or already a member",
    [QC_ESTORAGE] = "storage unavailable",
    [QC_ERATE] = "rate limited",
    [QC_EINTERNAL] = "internal error",
    [QC_ESELF] = "cannot befriend yourself",
    [QC_ELIMIT] = "limit reached",
    [QC_ETOOLONG] = "text too long",
    [QC_EGROUPTAKEN] = "group name already taken",
    [QC_ESHUTDOWN] = "server shutting down",
    [QC_EALREADYIN] = "already logged in on this connection",
    [QC_EBLOCKED] = "blocked",
    [QC_ENOTALLOWED] = "not allowed by your group role",
    [QC_EBADTOKEN] = "bad or expired token",
    [QC_EDEVICES] = "too many devices",
    [QC_EREGRATE] = "too many registrations, try again later",
};

const char *qc_strerror(int err)
{
    if (err < 0 || err > QC_ERR_MAX || error_texts[err] == NULL)
        return "unknown error";
    return error_texts[err];
}
