/*
 * proc.c - signals and tick shared by qchatd's processes (see proc.h).
 */
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "server/proc.h"

int proc_signal_fd(void)
{
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGUSR1);
    sigaddset(&mask, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    return signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
}

int proc_tick_fd(int ms)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (fd < 0)
        return -1;
    struct timespec every = { ms / 1000, (long)(ms % 1000) * 1000000L };
    struct itimerspec tick = { .it_interval = every, .it_value = every };
    if (timerfd_settime(fd, 0, &tick, NULL) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}
