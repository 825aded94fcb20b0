/*
 * title.h - process titles as ps(1) shows them: "qchatd: master",
 * "qchatd: worker 3", "qchatd: relay", exactly, with nothing after them.
 */
#ifndef QCHAT_SERVER_TITLE_H
#define QCHAT_SERVER_TITLE_H

/* In main, before argv is read: remember the argument area, then setproctitle_init. */
void title_init(int argc, char **argv, char **envp);
/* Set the title (printf format); ps shows exactly the result. */
void title_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
