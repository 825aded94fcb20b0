/*
 * static.c - the web client's files, served on the websocket listener.
 *
 * A request path is mapped to a file under the web root only when every
 * segment is a plain name (letters, digits, '-', '_', '.', not starting
 * with '.'), so "..", hidden files and odd bytes never reach the file
 * system; "/" means index.html.  The file is opened with O_NOFOLLOW relative
 * to the root, must be a regular file of at most STATIC_FILE_MAX bytes, and
 * is sent whole with its type, length, no-cache and a Content-Security-Policy
 * that lets the page talk only to its own origin.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "server/static.h"

#define STATIC_PATH_MAX 256 /* longest request path mapped to a file */

static const struct {
    const char *ext;
    const char *type;
} content_types[] = {
    { ".html", "text/html; charset=utf-8" },
    { ".js", "text/javascript; charset=utf-8" },
    { ".css", "text/css; charset=utf-8" },
    { ".json", "application/json" },
    { ".svg", "image/svg+xml" },
    { ".png", "image/png" },
    { ".ico", "image/x-icon" },
    { ".txt", "text/plain; charset=utf-8" },
    { ".webmanifest", "application/manifest+json" },
};

const char *static_reason(int status)
{
    switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 426: return "Upgrade Required";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    default: return "Error";
    }
}

int static_error(struct buf *out, int status, const char *extra_headers)
{
    const char *reason = static_reason(status);

    if (buf_printf(out,
                   "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                   "Content-Length: %zu\r\n%sConnection: close\r\n\r\n%d %s\n",
                   status, reason, strlen(reason) + 5, extra_headers ? extra_headers : "", status,
                   reason) < 0)
        return -1;
    return status;
}

static bool is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
}

/* "/a/b.js" -> "a/b.js", "/" -> "index.html"; false when not a plain path. */
static bool path_to_relative_name(const char *path, char *name, size_t size)
{
    const char *p = path;
    size_t n = 0;

    if (path[0] != '/' || strlen(path) >= STATIC_PATH_MAX)
        return false;
    if (strcmp(path, "/") == 0) {
        snprintf(name, size, "index.html");
        return true;
    }
    p++;
    while (*p) {
        if (*p == '.' || *p == '/')
            return false; /* hidden or empty segment (also "..") */
        while (*p && *p != '/') {
            if (!is_name_char(*p) || n + 1 >= size)
                return false;
            name[n++] = *p++;
        }
        if (*p == '/') {
            name[n++] = *p++;
            if (*p == '\0')
                return false; /* a directory */
        }
    }
    name[n] = '\0';
    return n > 0;
}

static const char *type_of(const char *name)
{
    size_t len = strlen(name);

    for (size_t i = 0; i < sizeof(content_types) / sizeof(content_types[0]); i++) {
        size_t el = strlen(content_types[i].ext);
        if (len > el && strcmp(name + len - el, content_types[i].ext) == 0)
            return content_types[i].type;
    }
    return "application/octet-stream";
}

/* Open a plain file under root; -1 with errno when it is not there or not allowed. */
static int open_under_root(const char *root, const char *name)
{
    int dir = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int fd;

    if (dir < 0)
        return -1;
    fd = openat(dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    close(dir);
    return fd;
}

static int read_whole(int fd, char *dst, size_t size)
{
    size_t got = 0;

    while (got < size) {
        ssize_t r = read(fd, dst + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

static int append_file(struct buf *out, int fd, size_t size, const char *type, bool head)
{
    size_t mark = out->len;

    if (buf_printf(out,
                   "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                   "Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n"
                   "Content-Security-Policy: default-src 'self'; connect-src 'self' ws: wss:; "
                   "img-src 'self' data:; frame-ancestors 'none'\r\n"
                   "Referrer-Policy: no-referrer\r\nConnection: close\r\n\r\n",
                   type, size) < 0)
        return -1;
    if (head || size == 0)
        return 200;
    if (buf_reserve(out, size) < 0)
        return -1;
    if (read_whole(fd, out->data + out->len, size) < 0) {
        out->len = mark; /* the file changed under us: answer 500 instead */
        return static_error(out, 500, NULL);
    }
    out->len += size;
    return 200;
}

int static_respond(const char *root, const char *path, bool head, struct buf *out)
{
    char name[STATIC_PATH_MAX];
    struct stat st;
    int fd, status;

    if (root == NULL || root[0] == '\0' || !path_to_relative_name(path, name, sizeof(name)))
        return static_error(out, 404, NULL);
    fd = open_under_root(root, name);
    if (fd < 0)
        return static_error(out, 404, NULL);
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > STATIC_FILE_MAX) {
        close(fd);
        return static_error(out, 404, NULL);
    }
    status = append_file(out, fd, (size_t)st.st_size, type_of(name), head);
    close(fd);
    return status;
}
