/*
 * store_cases.c - the storage driver cases shared by test_store.c (SQLite)
 * and test_store_mysql.c (MySQL): the same calls with the same
 * expectations, whatever the driver.  See store_cases.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store_cases.h"

#define SEED_SQL_MAX 128

/* ---- helpers -------------------------------------------------------- */

struct store_fixture *store_case_fixture(void **state)
{
    struct store_fixture *f = *state;

    if (f->unavailable)
        skip();
    return f;
}

struct store *open_store(struct store_fixture *f, int cap)
{
    struct qc_config cfg = f->cfg;
    char err[ERR_MAX] = "";
    struct store *st = NULL;

    cfg.max_offline_messages = cap;
    if (f->ops->open(&st, &cfg, err, sizeof(err)) != QC_OK)
        fail_msg("open: %s", err);
    assert_non_null(st);
    return st;
}

int32_t new_user(struct store_fixture *f, const char *name)
{
    int32_t id = 0;

    assert_int_equal(f->ops->user_create(f->st, name, "$y$hash", &id), QC_OK);
    assert_true(id > 0);
    return id;
}

void seen_user(void *arg, int32_t id, const char *name)
{
    struct seen *s = arg;

    assert_true(s->n < LIST_MAX);
    s->ids[s->n] = id;
    strlcpy(s->names[s->n], name, sizeof(s->names[0]));
    s->n++;
}

void seen_member(void *arg, int32_t id, const char *name, const char *role)
{
    struct seen *s = arg;

    seen_user(s, id, name);
    strlcpy(s->extra[s->n - 1], role, sizeof(s->extra[0]));
}

void seen_group(void *arg, int32_t groupid, const char *name, const char *desc)
{
    struct seen *s = arg;

    seen_user(s, groupid, name);
    strlcpy(s->extra[s->n - 1], desc, sizeof(s->extra[0]));
}

void seen_msg(void *arg, const char *msg, size_t len)
{
    struct msgs *m = arg;

    assert_true(m->n < (int)(sizeof(m->len) / sizeof(m->len[0])));
    assert_true(len < MSG_MAX);
    memcpy(m->text[m->n], msg, len);
    m->text[m->n][len] = '\0';
    m->len[m->n] = len;
    m->n++;
}

static void count_member(void *arg, int32_t id, const char *name, const char *role)
{
    struct nested *n = arg;

    n->members++;
}

void list_members(void *arg, int32_t groupid, const char *name, const char *desc)
{
    struct nested *n = arg;

    n->groups++;
    assert_int_equal(n->f->ops->group_members(n->f->st, groupid, count_member, n), QC_OK);
}

void store_text(struct store_fixture *f, struct store *st, const int32_t *ids, size_t n,
                const char *text)
{
    assert_int_equal(f->ops->offline_store(st, ids, n, text, strlen(text)), QC_OK);
}

int offline_count(struct store_fixture *f, int32_t id)
{
    int n = -1;

    assert_int_equal(f->ops->offline_count(f->st, id, &n), QC_OK);
    return n;
}

/* ---- users ---------------------------------------------------------- */

void test_reopen_ping_init_schema(void **state)
{
    struct store_fixture *f = store_case_fixture(state);
    struct store_user u;
    int32_t id = new_user(f, "alice");

    assert_true(f->ops->ping(f->st));
    assert_int_equal(f->ops->init_schema(f->st), QC_OK);
    f->ops->close(f->st);
    f->st = open_store(f, f->cfg.max_offline_messages);
    assert_int_equal(f->ops->init_schema(f->st), QC_OK);
    assert_int_equal(f->ops->user_get(f->st, id, &u), QC_OK);
    assert_string_equal(u.name, "alice");
}

void test_users(void **state)
{
    struct store_fixture *f = store_case_fixture(state);
    char longname[QC_NAME_MAX + 2];
    struct store_user u;
    int32_t alice, bob, id = 0;

    alice = new_user(f, "alice");
    bob = new_user(f, "bob");
    assert_int_not_equal(alice, bob);

    assert_int_equal(f->ops->user_create(f->st, "alice", "x", &id), QC_ENAMETAKEN);
    assert_int_equal(f->ops->user_create(f->st, "Alice", "x", &id), QC_OK);

    memset(&u, 0, sizeof(u));
    assert_int_equal(f->ops->user_get(f->st, alice, &u), QC_OK);
    assert_int_equal(u.id, alice);
    assert_string_equal(u.name, "alice");
    assert_string_equal(u.password, "$y$hash");
    assert_int_equal(f->ops->user_get(f->st, NO_SUCH_ID, &u), QC_ENOUSER);

    assert_int_equal(f->ops->user_set_password(f->st, bob, "$y$other"), QC_OK);
    assert_int_equal(f->ops->user_get(f->st, bob, &u), QC_OK);
    assert_string_equal(u.password, "$y$other");
    /* The same value again still finds the user. */
    assert_int_equal(f->ops->user_set_password(f->st, bob, "$y$other"), QC_OK);
    assert_int_equal(f->ops->user_set_password(f->st, NO_SUCH_ID, "x"), QC_ENOUSER);

    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0'; /* QC_NAME_MAX + 1 bytes */
    assert_int_equal(f->ops->user_create(f->st, longname, "x", &id), QC_ETOOLONG);
    longname[QC_NAME_MAX] = '\0'; /* exactly QC_NAME_MAX */
    assert_int_equal(f->ops->user_create(f->st, longname, "x", &id), QC_OK);
    assert_int_equal(f->ops->user_get(f->st, id, &u), QC_OK);
    assert_string_equal(u.name, longname);
}

/* ---- friends -------------------------------------------------------- */

void test_friends(void **state)
{
    struct store_fixture *f = store_case_fixture(state);
    int32_t alice = new_user(f, "alice"), bob = new_user(f, "bob"), carol = new_user(f, "carol");
    struct seen s;
    int n = -1;

    assert_int_equal(f->ops->friend_add(f->st, alice, bob), QC_OK);
    assert_int_equal(f->ops->friend_add(f->st, carol, alice), QC_OK);
    assert_int_equal(f->ops->friend_add(f->st, alice, bob), QC_EALREADY);
    assert_int_equal(f->ops->friend_add(f->st, bob, alice), QC_EALREADY);
    assert_int_equal(f->ops->friend_add(f->st, alice, NO_SUCH_ID), QC_ENOUSER);
    assert_int_equal(f->ops->friend_add(f->st, alice, alice), QC_ESELF);

    assert_int_equal(f->ops->friend_count(f->st, alice, &n), QC_OK);
    assert_int_equal(n, 2);
    assert_int_equal(f->ops->friend_count(f->st, bob, &n), QC_OK);
    assert_int_equal(n, 1);
    assert_int_equal(f->ops->friend_count(f->st, NO_SUCH_ID, &n), QC_OK);
    assert_int_equal(n, 0);

    memset(&s, 0, sizeof(s));
    assert_int_equal(f->ops->friend_list(f->st, alice, seen_user, &s), QC_OK);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.ids[0], bob);
    assert_string_equal(s.names[0], "bob");
    assert_int_equal(s.ids[1], carol);
    assert_string_equal(s.names[1], "carol");

    memset(&s, 0, sizeof(s));
    assert_int_equal(f->ops->friend_list(f->st, bob, seen_user, &s), QC_OK);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.ids[0], alice);
    assert_string_equal(s.names[0], "alice");
}

/* A seed database holds one-way rows; adding the friend again completes them. */
void test_friends_seed_one_way(void **state)
{
    struct store_fixture *f = store_case_fixture(state);
    int32_t alice = new_user(f, "alice"), bob = new_user(f, "bob");
    char sql[SEED_SQL_MAX];
    int n = -1;

    snprintf(sql, sizeof(sql), "INSERT INTO Friend VALUES (%d, %d)", (int)alice, (int)bob);
    f->raw_sql(f, sql);
    assert_int_equal(f->ops->friend_count(f->st, bob, &n), QC_OK);
    assert_int_equal(n, 0);
    assert_int_equal(f->ops->friend_add(f->st, bob, alice), QC_OK);
    assert_int_equal(f->ops->friend_count(f->st, bob, &n), QC_OK);
    assert_int_equal(n, 1);
    assert_int_equal(f->ops->friend_count(f->st, alice, &n), QC_OK);
    assert_int_equal(n, 1);
}

/* ---- groups --------------------------------------------------------- */

void test_groups(void **state)
{
    struct store_fixture *f = store_case_fixture(state);
    int32_t alice = new_user(f, "alice"), bob = new_user(f, "bob");
    int32_t g1 = 0, g2 = 0, other = 0;
    char longdesc[QC_GROUPDESC_MAX + 2];
    struct seen s;
    int n = -1;

    assert_int_equal(f->ops->group_create(f->st, "g1", "study", alice, &g1), QC_OK);
    assert_true(g1 > 0);
    assert_int_equal(f->ops->group_create(f->st, "g1", "again", bob, &other), QC_EGROUPTAKEN);
    assert_int_equal(other, 0);
    assert_int_equal(f->ops->group_create(f->st, "g2", NULL, bob, &g2), QC_OK);
    assert_int_not_equal(g1, g2);

    memset(longdesc, 'd', sizeof(longdesc) - 1);
    longdesc[sizeof(longdesc) - 1] = '\0';
    assert_int_equal(f->ops->group_create(f->st, "g3", longdesc, bob, &other), QC_ETOOLONG);

    assert_int_equal(f->ops->group_join(f->st, g1, bob), QC_OK);
    assert_int_equal(f->ops->group_join(f->st, g1, bob), QC_EALREADY);
    assert_int_equal(f->ops->group_join(f->st, g1, alice), QC_EALREADY);
    assert_int_equal(f->ops->group_join(f->st, NO_SUCH_ID, bob), QC_ENOGROUP);
    assert_int_equal(f->ops->group_join(f->st, g1, NO_SUCH_ID), QC_ENOUSER);

    assert_int_equal(f->ops->group_member_count(f->st, g1, &n), QC_OK);
    assert_int_equal(n, 2);
    assert_int_equal(f->ops->group_member_count(f->st, g2, &n), QC_OK);
    assert_int_equal(n, 1);
    assert_int_equal(f->ops->group_member_count(f->st, NO_SUCH_ID, &n), QC_ENOGROUP);

    memset(&s, 0, sizeof(s));
    assert_int_equal(f->ops->group_members(f->st, g1, seen_member, &s), QC_OK);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.ids[0], alice);
    assert_string_equal(s.names[0], "alice");
    assert_string_equal(s.extra[0], QC_ROLE_CREATOR);
    assert_int_equal(s.ids[1], bob);
    assert_string_equal(s.extra[1], QC_ROLE_NORMAL);

    memset(&s, 0, sizeof(s));
    assert_int_equal(f->ops->group_members(f->st, NO_SUCH_ID, seen_member, &s), QC_ENOGROUP);
    assert_int_equal(s.n, 0);

    memset(&s, 0, sizeof(s));
    assert_int_equal(f->ops->user_groups(f->st, bob, seen_group, &s), QC_OK);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.ids[0], g1);
    assert_string_equal(s.names[0], "g1");
    assert_string_equal(s.extra[0], "study");
    assert_int_equal(s.ids[1], g2);
    assert_string_equal(s.extra[1], "");

    memset(&s, 0, sizeof(s));
    assert_int_equal(f->ops->user_groups(f->st, NO_SUCH_ID, seen_group, &s), QC_OK);
    assert_int_equal(s.n, 0);
}

void test_nested_calls(void **state)
{
    struct store_fixture *f = store_case_fixture(state);
    int32_t alice = new_user(f, "alice"), bob = new_user(f, "bob"), g1 = 0, g2 = 0;
    struct nested n = { .f = f };

    assert_int_equal(f->ops->group_create(f->st, "g1", "", alice, &g1), QC_OK);
    assert_int_equal(f->ops->group_create(f->st, "g2", "", bob, &g2), QC_OK);
    assert_int_equal(f->ops->group_join(f->st, g2, alice), QC_OK);
    assert_int_equal(f->ops->user_groups(f->st, alice, list_members, &n), QC_OK);
    assert_int_equal(n.groups, 2);
    assert_int_equal(n.members, 3);
}

void test_group_unknown_creator(void **state)
{
    struct store_fixture *f = store_case_fixture(state);
    int32_t g = 0;
    struct seen s;

    assert_int_equal(f->ops->group_create(f->st, "g1", "", NO_SUCH_ID, &g), QC_ENOUSER);
    /* Rolled back: the name is still free. */
    assert_int_equal(f->ops->group_create(f->st, "g1", "", new_user(f, "alice"), &g), QC_OK);
    memset(&s, 0, sizeof(s));
    assert_int_equal(f->ops->group_members(f->st, g, seen_member, &s), QC_OK);
    assert_int_equal(s.n, 1);
}

/* ---- offline messages ----------------------------------------------- */

void test_offline_order_and_take(void **state)
{
    struct store_fixture *f = store_case_fixture(state);
    int32_t alice = new_user(f, "alice"), bob = new_user(f, "bob");
    int32_t both[] = { alice, bob };
    struct msgs *m = calloc(1, sizeof(*m));
    int dropped = -1;

    assert_non_null(m);
    store_text(f, f->st, both, 2, "{\"msg\":\"one\"}");
    store_text(f, f->st, &alice, 1, "{\"msg\":\"two\"}");
    store_text(f, f->st, &alice, 1, "{\"msg\":\"three\"}");
    assert_int_equal(f->ops->offline_store(f->st, &alice, 0, "x", 1), QC_OK);
    assert_int_equal(offline_count(f, alice), 3);
    assert_int_equal(offline_count(f, bob), 1);

    assert_int_equal(f->ops->offline_take(f->st, alice, seen_msg, m, &dropped), QC_OK);
    assert_int_equal(dropped, 0);
    assert_int_equal(m->n, 3);
    assert_string_equal(m->text[0], "{\"msg\":\"one\"}");
    assert_string_equal(m->text[1], "{\"msg\":\"two\"}");
    assert_string_equal(m->text[2], "{\"msg\":\"three\"}");
    assert_int_equal(m->len[2], strlen("{\"msg\":\"three\"}"));
    assert_int_equal(offline_count(f, alice), 0);
    assert_int_equal(offline_count(f, bob), 1);

    m->n = 0;
    dropped = -1;
    assert_int_equal(f->ops->offline_take(f->st, alice, seen_msg, m, &dropped), QC_OK);
    assert_int_equal(m->n, 0);
    assert_int_equal(dropped, 0);

    assert_int_equal(f->ops->offline_take(f->st, bob, seen_msg, m, &dropped), QC_OK);
    assert_int_equal(m->n, 1);
    assert_string_equal(m->text[0], "{\"msg\":\"one\"}");
    assert_int_equal(offline_count(f, bob), 0);
    free(m);
}

void test_offline_exact_length(void **state)
{
    struct store_fixture *f = store_case_fixture(state);
    int32_t alice = new_user(f, "alice");
    struct msgs *m = calloc(1, sizeof(*m));
    int dropped = -1;

    assert_non_null(m);
    assert_int_equal(f->ops->offline_store(f->st, &alice, 1, "abcdef", 3), QC_OK);
    assert_int_equal(f->ops->offline_store(f->st, &alice, 1, "", 0), QC_OK);
    assert_int_equal(f->ops->offline_take(f->st, alice, seen_msg, m, &dropped), QC_OK);
    assert_int_equal(m->n, 2);
    assert_int_equal(m->len[0], 3);
    assert_string_equal(m->text[0], "abc");
    assert_int_equal(m->len[1], 0);
    free(m);
}

/* One unknown recipient fails the whole batch: nothing is stored. */
void test_offline_unknown_user(void **state)
{
    struct store_fixture *f = store_case_fixture(state);
    int32_t alice = new_user(f, "alice");
    int32_t ids[] = { alice, NO_SUCH_ID };

    assert_int_equal(f->ops->offline_store(f->st, ids, 2, "x", 1), QC_ENOUSER);
    assert_int_equal(offline_count(f, alice), 0);
}

void test_offline_cap(void **state)
{
    struct store_fixture *f = store_case_fixture(state);
    int32_t alice = new_user(f, "alice"), bob = new_user(f, "bob");
    int32_t both[] = { alice, bob };
    struct store *capped = open_store(f, SMALL_CAP);
    struct msgs *m = calloc(1, sizeof(*m));
    char text[MSG_MAX];
    int i, dropped = -1;

    assert_non_null(m);
    for (i = 1; i <= SMALL_CAP + 2; i++) {
        snprintf(text, sizeof(text), "m%d", i);
        store_text(f, capped, &alice, 1, text);
    }
    store_text(f, capped, both, 2, "last");
    assert_int_equal(offline_count(f, alice), SMALL_CAP);
    assert_int_equal(offline_count(f, bob), 1);

    assert_int_equal(f->ops->offline_take(capped, alice, seen_msg, m, &dropped), QC_OK);
    assert_int_equal(dropped, 3); /* m1, m2, m3 */
    assert_int_equal(m->n, SMALL_CAP);
    assert_string_equal(m->text[0], "m4");
    assert_string_equal(m->text[1], "m5");
    assert_string_equal(m->text[2], "last");

    /* The count was reset by the take. */
    m->n = 0;
    store_text(f, capped, &alice, 1, "after");
    assert_int_equal(f->ops->offline_take(capped, alice, seen_msg, m, &dropped), QC_OK);
    assert_int_equal(dropped, 0);
    assert_int_equal(m->n, 1);
    assert_string_equal(m->text[0], "after");

    m->n = 0;
    assert_int_equal(f->ops->offline_take(capped, bob, seen_msg, m, &dropped), QC_OK);
    assert_int_equal(dropped, 0);
    assert_int_equal(m->n, 1);
    f->ops->close(capped);
    free(m);
}

/* ---- several handles ------------------------------------------------ */

/* Check that writer A's and B's messages each arrived complete and in order. */
static void check_interleaved(const struct msgs *m, int per_writer)
{
    int i, a = 0, b = 0, k;
    char want[MSG_MAX];

    assert_int_equal(m->n, 2 * per_writer);
    for (i = 0; i < m->n; i++) {
        assert_true(m->text[i][0] == 'A' || m->text[i][0] == 'B');
        k = m->text[i][0] == 'A' ? a++ : b++;
        snprintf(want, sizeof(want), "%c%d", m->text[i][0], k);
        assert_string_equal(m->text[i], want);
    }
    assert_int_equal(a, per_writer);
    assert_int_equal(b, per_writer);
}

void test_two_handles(void **state)
{
    struct store_fixture *f = store_case_fixture(state);
    struct store *second = open_store(f, f->cfg.max_offline_messages);
    int32_t alice = new_user(f, "alice"), id = 0;
    struct msgs *m = calloc(1, sizeof(*m));
    struct store_user u;
    char text[MSG_MAX];
    int i, dropped = -1;

    assert_non_null(m);
    assert_int_equal(f->ops->user_get(second, alice, &u), QC_OK);
    assert_int_equal(f->ops->user_create(second, "alice", "x", &id), QC_ENAMETAKEN);
    for (i = 0; i < CONCURRENT_MSGS; i++) {
        snprintf(text, sizeof(text), "A%d", i);
        store_text(f, f->st, &alice, 1, text);
        snprintf(text, sizeof(text), "B%d", i);
        store_text(f, second, &alice, 1, text);
    }
    assert_int_equal(f->ops->offline_take(second, alice, seen_msg, m, &dropped), QC_OK);
    check_interleaved(m, CONCURRENT_MSGS);
    assert_int_equal(offline_count(f, alice), 0);
    f->ops->close(second);
    free(m);
}

/* A worker process: its own handle after fork, CONCURRENT_MSGS stores. */
static void run_writer(struct store_fixture *f, int32_t userid, char tag)
{
    char err[ERR_MAX], text[MSG_MAX];
    struct store *st = NULL;
    int i;

    if (f->ops->open(&st, &f->cfg, err, sizeof(err)) != QC_OK) {
        fprintf(stderr, "writer %c: %s\n", tag, err);
        _exit(1);
    }
    for (i = 0; i < CONCURRENT_MSGS; i++) {
        snprintf(text, sizeof(text), "%c%d", tag, i);
        if (f->ops->offline_store(st, &userid, 1, text, strlen(text)) != QC_OK)
            _exit(2);
    }
    f->ops->close(st);
}

void test_two_processes(void **state)
{
    struct store_fixture *f = store_case_fixture(state);
    int32_t alice = new_user(f, "alice");
    int status = -1, dropped = -1;
    struct msgs *m;
    pid_t pid;

    f->ops->close(f->st); /* like the master: nothing open across fork */
    f->st = NULL;
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(CHILD_ALARM_SEC);
        run_writer(f, alice, 'B');
        _exit(0);
    }
    run_writer(f, alice, 'A');
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    f->st = open_store(f, f->cfg.max_offline_messages);
    m = calloc(1, sizeof(*m));
    assert_non_null(m);
    assert_int_equal(f->ops->offline_take(f->st, alice, seen_msg, m, &dropped), QC_OK);
    check_interleaved(m, CONCURRENT_MSGS);
    free(m);
}
