/*
 * static.h - the web client's files, served on the websocket listener.
 *
 * GET / and its assets (index.html, app.js, style.css, ...) come from one
 * directory (`[websocket] web_root`).  Only plain names under that
 * directory are served: no "..", no hidden files, no symlinks out of it,
 * regular files only, at most STATIC_FILE_MAX bytes.  Every response is
 * complete (headers and body) and ends the connection (Connection: close).
 */
#ifndef QCHAT_SERVER_STATIC_H
#define QCHAT_SERVER_STATIC_H

#include <stdbool.h>

#include "common/buf.h"

#define STATIC_FILE_MAX (4 * 1024 * 1024) /* larger files are refused (404) */

/*
 * Append the response to GET (or HEAD when head) of path (no query) from
 * root to out.  Returns the HTTP status sent (200, 404, 500), -1: no memory.
 */
int static_respond(const char *root, const char *path, bool head, struct buf *out);

/* A complete plain-text error response ("403 Forbidden" etc.) with extra header lines. */
int static_error(struct buf *out, int status, const char *extra_headers);

/* Reason phrase of a status the server sends ("Not Found"). */
const char *static_reason(int status);

#endif
