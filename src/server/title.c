/*
 * title.c - exact process titles (see title.h).
 *
 * libbsd's setproctitle writes the title over the argument area and, when
 * the title is shorter than the original argv[0], puts a "." where argv[0]'s
 * NUL was (or a space when it is exactly as long), so that the kernel keeps
 * reading /proc/PID/cmdline as one string: ps then shows "qchatd: master   ."
 * or "qchatd: worker 1 ".  Linux reads the area as one NUL-terminated string
 * whenever its last byte is not NUL; so after setproctitle we end the title
 * with a NUL where it ends, and make the area's last byte non-NUL.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "server/title.h"

#define TITLE_MAX 128

static char *area_start; /* argv[0]'s first byte */
static char *area_last;  /* the NUL ending the last argument */

void title_init(int argc, char **argv, char **envp)
{
    if (argc > 0 && argv[0] != NULL) {
        area_start = argv[0];
        area_last = argv[argc - 1] + strlen(argv[argc - 1]);
    }
    setproctitle_init(argc, argv, envp);
}

void title_set(const char *fmt, ...)
{
    char title[TITLE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(title, sizeof title, fmt, ap);
    va_end(ap);
    setproctitle("-%s", title);
    if (area_start == NULL)
        return;
    size_t len = strlen(title);
    if (area_start + len >= area_last)
        return; /* the title fills the area: the kernel shows it as it is */
    /* libbsd wrote the title at area_start; end it there, whatever it added. */
    if (strncmp(area_start, title, len) != 0)
        return;
    memset(area_start + len, '\0', (size_t)(area_last - (area_start + len)));
    *area_last = ' ';
}
