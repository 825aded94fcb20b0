/*
 * qchat_tty.c - qchat's interactive mode: the seed client's menu
 * (1. login 2. register 3. quit), then its commands, with libedit line
 * editing and history.
 *
 * One thread.  libedit reads characters through our EL_GETCFN function,
 * which poll()s the terminal and the server socket together: whatever the
 * server sends while the user types is printed at once (out_emit clears
 * the prompt line, prints, and has libedit redraw the prompt and the
 * half-typed line with EL_REFRESH), and a heartbeat goes out when idle.
 * Passwords are read with echo off, outside libedit, and never enter the
 * history; neither do login:, register: and passwd: lines.  The menu holds
 * no connection: logging in or registering makes one (qchat_conn.c).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include <wchar.h>

#include "common/proto.h"
#include "qchat.h"

#define TTY_HISTORY_SIZE 500
#define TTY_PROMPT       "qchat> "

/* ---- reading characters for libedit ----------------------------------- */

/* EL_GETCFN: one character from the terminal; 0 at EOF. */
static int tty_getc(EditLine *el, wchar_t *wc)
{
    struct qchat *q;
    mbstate_t mbs;

    if (el_get(el, EL_CLIENTDATA, &q) < 0)
        return -1;
    memset(&mbs, 0, sizeof mbs);
    for (;;) {
        char ch;
        size_t k;
        ssize_t n;

        if (qchat_wait(q, STDIN_FILENO, -1) != 1)
            return -1;
        n = read(STDIN_FILENO, &ch, 1);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -1;
        }
        k = mbrtowc(wc, &ch, 1, &mbs);
        if (k == (size_t)-2)
            continue; /* the rest of a multibyte character */
        if (k == (size_t)-1) {
            memset(&mbs, 0, sizeof mbs); /* not valid here: drop the byte */
            continue;
        }
        return 1;
    }
}

static char *tty_prompt(EditLine *el)
{
    struct qchat *q;

    if (el_get(el, EL_CLIENTDATA, &q) < 0)
        return "";
    return (char *)q->prompt;
}

/* A line typed at prompt, without its newline (malloc'd); NULL at EOF. */
static char *read_line(struct qchat *q, const char *prompt)
{
    const char *line;
    char *copy;
    int count;
    size_t len;

    q->prompt = prompt;
    q->in_prompt = true;
    line = el_gets(q->el, &count);
    q->in_prompt = false;
    if (line == NULL || count <= 0)
        return NULL;
    copy = strdup(line);
    if (copy == NULL)
        return NULL;
    len = strlen(copy);
    while (len > 0 && (copy[len - 1] == '\n' || copy[len - 1] == '\r'))
        copy[--len] = '\0';
    return copy;
}

/* ---- passwords: echo off ---------------------------------------------- */

static struct termios saved_termios;
static const int password_signals[] = { SIGINT, SIGQUIT, SIGTERM, SIGHUP };
#define NPASSWORD_SIGNALS (sizeof password_signals / sizeof password_signals[0])

/* A signal while echo is off: give the terminal back, then die of it. */
static void restore_echo_and_raise(int sig)
{
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_termios);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void set_password_signals(void (*handler)(int))
{
    struct sigaction sa;
    size_t i;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    for (i = 0; i < NPASSWORD_SIGNALS; i++)
        (void)sigaction(password_signals[i], &sa, NULL);
}

/*
 * Read a password of at most QC_PASSWORD_MAX bytes with echo off into out
 * (QC_PASSWORD_MAX + 1 bytes).  false at EOF or when it is too long.
 */
bool qchat_read_password(struct qchat *q, const char *prompt, char *out)
{
    struct termios t;
    size_t len = 0;
    bool too_long = false, got_line = false;

    fputs(prompt, stdout);
    fflush(stdout);
    if (tcgetattr(STDIN_FILENO, &saved_termios) < 0)
        return false;
    t = saved_termios;
    t.c_lflag &= ~(tcflag_t)ECHO;
    t.c_lflag |= ECHONL;
    set_password_signals(restore_echo_and_raise);
    if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t) < 0) {
        set_password_signals(SIG_DFL);
        return false;
    }
    for (;;) {
        char ch;
        ssize_t n = read(STDIN_FILENO, &ch, 1);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (ch == '\n') {
            got_line = true;
            break;
        }
        if (len < QC_PASSWORD_MAX)
            out[len++] = ch;
        else
            too_long = true;
    }
    out[len] = '\0';
    (void)tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_termios);
    set_password_signals(SIG_DFL);
    if (len > 0 && out[len - 1] == '\r')
        out[--len] = '\0';
    if (too_long) {
        explicit_bzero(out, QC_PASSWORD_MAX + 1);
        out_line(q, "error: password longer than %d bytes", QC_PASSWORD_MAX);
        return false;
    }
    return got_line;
}

/* ---- the menu and the command loop ------------------------------------ */

/* ^D at a prompt: leave, on a fresh line. */
static void end_of_input(struct qchat *q)
{
    q->quit = true;
    fputc('\n', stdout);
    fflush(stdout);
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Lines that carry a password stay out of the history. */
static bool keep_in_history(const char *line)
{
    return line[0] != '\0' && !starts_with(line, "login:") && !starts_with(line, "register:") &&
           !starts_with(line, "passwd:");
}

static void command_loop(struct qchat *q)
{
    HistEvent ev;

    /* A dropped connection keeps the session wanted (it is restored); a
     * kick, a refused reconnect or loginout end it: back to the menu. */
    while (q->logged_in && !q->quit) {
        char *line;

        qchat_drain(q); /* what came with the last reply, before the prompt */
        if (!q->logged_in)
            break;
        line = read_line(q, TTY_PROMPT);
        if (line == NULL) {
            end_of_input(q);
            break;
        }
        if (keep_in_history(line))
            (void)history(q->hist, &ev, H_ENTER, line);
        if (line[0] != '\0')
            qchat_exec(q, line);
        explicit_bzero(line, strlen(line));
        free(line);
    }
}

static void login_dialog(struct qchat *q)
{
    char password[QC_PASSWORD_MAX + 1];
    char *id = read_line(q, "userid: ");

    if (id == NULL)
        return;
    if (qchat_read_password(q, "userpassword: ", password) && qchat_login(q, id, password) == 0)
        command_loop(q);
    explicit_bzero(password, sizeof password);
    free(id);
}

static void register_dialog(struct qchat *q)
{
    char password[QC_PASSWORD_MAX + 1];
    char *name = read_line(q, "username: ");

    if (name == NULL)
        return;
    if (qchat_read_password(q, "userpassword: ", password))
        qchat_register(q, name, password);
    explicit_bzero(password, sizeof password);
    free(name);
}

static void menu(struct qchat *q)
{
    while (!q->quit) {
        char *choice;

        out_line(q, "========================");
        out_line(q, "1. login");
        out_line(q, "2. register");
        out_line(q, "3. quit");
        out_line(q, "========================");
        choice = read_line(q, "choice: ");
        if (choice == NULL) {
            end_of_input(q);
            break;
        }
        if (strcmp(choice, "1") == 0)
            login_dialog(q);
        else if (strcmp(choice, "2") == 0)
            register_dialog(q);
        else if (strcmp(choice, "3") == 0)
            q->quit = true;
        else if (choice[0] != '\0')
            out_line(q, "invalid input!");
        free(choice);
    }
}

/* ---- setup ------------------------------------------------------------ */

static int editor_open(struct qchat *q)
{
    HistEvent ev;

    q->el = el_init("qchat", stdin, stdout, stderr);
    q->hist = history_init();
    if (q->el == NULL || q->hist == NULL)
        return -1;
    if (el_set(q->el, EL_CLIENTDATA, q) < 0 || el_set(q->el, EL_PROMPT, tty_prompt) < 0 ||
        el_set(q->el, EL_EDITOR, "emacs") < 0 || el_set(q->el, EL_SIGNAL, 1) < 0 ||
        el_set(q->el, EL_GETCFN, tty_getc) < 0 || el_set(q->el, EL_HIST, history, q->hist) < 0 ||
        history(q->hist, &ev, H_SETSIZE, TTY_HISTORY_SIZE) < 0 ||
        history(q->hist, &ev, H_SETUNIQUE, 1) < 0)
        return -1;
    (void)el_source(q->el, NULL); /* ~/.editrc, if there is one */
    return 0;
}

static void editor_close(struct qchat *q)
{
    if (q->el != NULL)
        el_end(q->el);
    if (q->hist != NULL)
        history_end(q->hist);
    q->el = NULL;
    q->hist = NULL;
}

int qchat_run_tty(struct qchat *q)
{
    if (editor_open(q) < 0) {
        editor_close(q);
        fprintf(stderr, "qchat: cannot set up the line editor\n");
        return EXIT_FAILURE;
    }
    menu(q);
    editor_close(q);
    return q->trouble ? EXIT_FAILURE : EXIT_SUCCESS;
}
