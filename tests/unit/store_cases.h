/*
 * store_cases.h - the storage driver cases every driver must pass, written
 * once against struct store_ops and run by test_store.c (SQLite) and
 * test_store_mysql.c (MySQL), each with its own fixture around a
 * struct store_fixture.
 *
 * A driver test's setup fills the struct store_fixture (first member of its
 * own fixture, so that *state points at both) and the shared cases use
 * only that: the driver's ops, an open handle, its configuration, and a way
 * to run raw SQL behind the driver's back.  The helpers are for the
 * driver-specific cases too.
 */
#ifndef QCHAT_TESTS_STORE_CASES_H
#define QCHAT_TESTS_STORE_CASES_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "common/config.h"
#include "common/proto.h"
#include "store/store.h"

#define NO_SUCH_ID      999999
#define LIST_MAX        16
#define MSG_MAX         512
#define SMALL_CAP       3
#define CONCURRENT_MSGS 100 /* per writer in the concurrency tests */
#define CHILD_ALARM_SEC 60  /* a stuck child dies instead of hanging */
#define ERR_MAX         512

struct store_fixture {
    struct qc_config cfg;
    const struct store_ops *ops;
    struct store *st;
    bool unavailable; /* no server to test against: cases skip */
    /* Run one SQL statement on a connection of the test's own. */
    void (*raw_sql)(struct store_fixture *f, const char *sql);
    /*
     * Replace the (closed) database with an empty one holding only what
     * version 1 made: the first embedded migration's text, no SchemaVersion.
     */
    void (*make_v1)(struct store_fixture *f);
};

/* What the list callbacks saw. */
struct seen {
    int n;
    int32_t ids[LIST_MAX];
    char names[LIST_MAX][QC_NAME_MAX + 1];
    char extra[LIST_MAX][QC_GROUPDESC_MAX + 1]; /* role or description */
};

struct msgs {
    int n;
    size_t len[LIST_MAX * 16];
    char text[LIST_MAX * 16][MSG_MAX];
};

/* Login builds groups[] with their users[]: group_members inside user_groups. */
struct nested {
    struct store_fixture *f;
    int groups, members;
};

/* ---- helpers -------------------------------------------------------- */

/* The fixture of a case; skips the case when there is nothing to test. */
struct store_fixture *store_case_fixture(void **state);
/* A second handle on the same database with max_offline_messages = cap. */
struct store *open_store(struct store_fixture *f, int cap);
int32_t new_user(struct store_fixture *f, const char *name);
void seen_user(void *arg, int32_t id, const char *name);
void seen_member(void *arg, int32_t id, const char *name, const char *role);
void seen_group(void *arg, int32_t groupid, const char *name, const char *desc);
void seen_msg(void *arg, const char *msg, size_t len);
/* A callback for user_groups: struct nested counts groups and their members. */
void list_members(void *arg, int32_t groupid, const char *name, const char *desc);
void store_text(struct store_fixture *f, struct store *st, const int32_t *ids, size_t n,
                const char *text);
int offline_count(struct store_fixture *f, int32_t id);
/* Append one message of conv with body {"c":conv,"cseq":cseq}. */
void append_msg(struct store_fixture *f, int64_t conv, int64_t cseq, int32_t sender, int64_t ts);
/* Default config for the SQLite driver on the database at path, and f->ops for it. */
void sqlite_case_config(struct store_fixture *f, const char *path);
/* Remove SQLite database name in dir with its -wal and -shm files (absent ones are fine). */
void sqlite_files_remove(const char *dir, const char *name);
/* The same, then the (now empty) directory dir itself. */
void sqlite_dir_remove(const char *dir, const char *name);

/* ---- the cases -------------------------------------------------------- */

void test_reopen_ping_init_schema(void **state);
void test_users(void **state);
void test_friends(void **state);
void test_friends_seed_one_way(void **state);
void test_groups(void **state);
void test_nested_calls(void **state);
void test_group_unknown_creator(void **state);
void test_offline_order_and_take(void **state);
void test_offline_exact_length(void **state);
void test_offline_unknown_user(void **state);
void test_offline_cap(void **state);
void test_two_handles(void **state);
void test_two_processes(void **state);
void test_log_conv_keys(void **state);
void test_log_append_idempotent(void **state);
void test_log_history_pages(void **state);
void test_log_cursors(void **state);
void test_log_cursors_many(void **state);
void test_log_cursors_batches(void **state);
void test_log_runs_batches(void **state);
void test_log_undelivered(void **state);
void test_log_undelivered_prefix(void **state);
void test_log_undelivered_own(void **state);
void test_log_conversations(void **state);
void test_log_retention(void **state);
void test_log_pair_deleted(void **state);
void test_log_append_rows(void **state);
void test_log_purge_delivered(void **state);
void test_log_purge_many_convs(void **state);
void test_log_purge_walks_in_windows(void **state);
void test_log_conv_raise(void **state);
void test_log_gaps_sender_cursor(void **state);
void test_log_migrate_v1(void **state);
void test_log_speed(void **state);
void test_log_assign_batch(void **state);
void test_log_assign_two_processes(void **state);

/* Every shared case, for a driver test's list, with its fixture. */
#define STORE_CASES(setup, teardown)                                                       \
    cmocka_unit_test_setup_teardown(test_reopen_ping_init_schema, setup, teardown),        \
        cmocka_unit_test_setup_teardown(test_users, setup, teardown),                      \
        cmocka_unit_test_setup_teardown(test_friends, setup, teardown),                    \
        cmocka_unit_test_setup_teardown(test_friends_seed_one_way, setup, teardown),       \
        cmocka_unit_test_setup_teardown(test_groups, setup, teardown),                     \
        cmocka_unit_test_setup_teardown(test_nested_calls, setup, teardown),               \
        cmocka_unit_test_setup_teardown(test_group_unknown_creator, setup, teardown),      \
        cmocka_unit_test_setup_teardown(test_offline_order_and_take, setup, teardown),     \
        cmocka_unit_test_setup_teardown(test_offline_exact_length, setup, teardown),       \
        cmocka_unit_test_setup_teardown(test_offline_unknown_user, setup, teardown),       \
        cmocka_unit_test_setup_teardown(test_offline_cap, setup, teardown),                \
        cmocka_unit_test_setup_teardown(test_two_handles, setup, teardown),                \
        cmocka_unit_test_setup_teardown(test_two_processes, setup, teardown),              \
        cmocka_unit_test(test_log_conv_keys),                                              \
        cmocka_unit_test_setup_teardown(test_log_append_idempotent, setup, teardown),      \
        cmocka_unit_test_setup_teardown(test_log_conv_raise, setup, teardown),             \
        cmocka_unit_test_setup_teardown(test_log_gaps_sender_cursor, setup, teardown),     \
        cmocka_unit_test_setup_teardown(test_log_history_pages, setup, teardown),          \
        cmocka_unit_test_setup_teardown(test_log_cursors, setup, teardown),                \
        cmocka_unit_test_setup_teardown(test_log_cursors_many, setup, teardown),           \
        cmocka_unit_test_setup_teardown(test_log_cursors_batches, setup, teardown),        \
        cmocka_unit_test_setup_teardown(test_log_runs_batches, setup, teardown),           \
        cmocka_unit_test_setup_teardown(test_log_undelivered, setup, teardown),            \
        cmocka_unit_test_setup_teardown(test_log_undelivered_prefix, setup, teardown),     \
        cmocka_unit_test_setup_teardown(test_log_undelivered_own, setup, teardown),        \
        cmocka_unit_test_setup_teardown(test_log_conversations, setup, teardown),          \
        cmocka_unit_test_setup_teardown(test_log_retention, setup, teardown),              \
        cmocka_unit_test_setup_teardown(test_log_pair_deleted, setup, teardown),           \
        cmocka_unit_test_setup_teardown(test_log_append_rows, setup, teardown),            \
        cmocka_unit_test_setup_teardown(test_log_purge_delivered, setup, teardown),        \
        cmocka_unit_test_setup_teardown(test_log_purge_many_convs, setup, teardown),       \
        cmocka_unit_test_setup_teardown(test_log_purge_walks_in_windows, setup, teardown), \
        cmocka_unit_test_setup_teardown(test_log_migrate_v1, setup, teardown),             \
        cmocka_unit_test_setup_teardown(test_log_speed, setup, teardown),                  \
        cmocka_unit_test_setup_teardown(test_log_assign_batch, setup, teardown),           \
        cmocka_unit_test_setup_teardown(test_log_assign_two_processes, setup, teardown)

#endif
