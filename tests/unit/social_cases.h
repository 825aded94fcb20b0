/*
 * social_cases.h - the cases of the social storage functions
 * (include/store/social.h) every driver must pass, written once against
 * struct social_ops and run by test_social.c (SQLite) and
 * test_social_mysql.c (MySQL), each with its own fixture around a struct
 * social_fixture.
 *
 * A driver test's setup opens a store on a fresh database with today's
 * schema (the store's open creates it) and fills the fixture; the cases
 * apply sql/<driver>/003-social.sql through migrate() (the migration
 * runner of the log branch will do it at open), except the migration
 * case, which first writes v1 rows.
 */
#ifndef QCHAT_TESTS_SOCIAL_CASES_H
#define QCHAT_TESTS_SOCIAL_CASES_H

#include "store/social.h"
#include "store_cases.h"

#define TEN_DAYS    (10 * 24 * 3600)
#define MANY_GROUPS 40 /* login_groups: more groups than any per-group query budget */

struct social_fixture {
    struct store_fixture store; /* first: *state points at all of it */
    const struct social_ops *so;
    /* Apply 003-social.sql behind the driver's back. */
    void (*migrate)(struct social_fixture *f);
    /* First column of the first row of a query, as a number (-1: no row). */
    long long (*raw_int)(struct social_fixture *f, const char *sql);
    /* Statements the database server has executed so far (any connection). */
    long long (*statements)(struct social_fixture *f);
};

/* The fixture, migrated; skips the case when there is nothing to test. */
struct social_fixture *social_case_fixture(void **state);

void test_request_and_accept(void **state);
void test_request_errors(void **state);
void test_request_blocked_either_way(void **state);
void test_request_limit_on_accept(void **state);
void test_decline(void **state);
void test_friend_add_without_consent(void **state);
void test_friend_remove(void **state);
void test_block_ends_friendship(void **state);
void test_block_errors_and_unblock(void **state);
void test_members_roles_join_order(void **state);
void test_leave_creator_to_oldest_admin(void **state);
void test_leave_creator_to_oldest_member(void **state);
void test_leave_last_member_deletes(void **state);
void test_leave_errors(void **state);
void test_kick_rules(void **state);
void test_set_role_rules(void **state);
void test_update_rules(void **state);
void test_delete_rules(void **state);
void test_group_count(void **state);
void test_login_groups_one_query(void **state);
void test_login_friends_one_query(void **state);
void test_tokens(void **state);
void test_token_expiry_and_revoke(void **state);
void test_token_errors(void **state);
void test_password_change_revokes(void **state);
void test_migration_of_v1_groups(void **state);

#define SOCIAL_CASES(setup, teardown)                                                          \
    cmocka_unit_test_setup_teardown(test_request_and_accept, setup, teardown),                 \
        cmocka_unit_test_setup_teardown(test_request_errors, setup, teardown),                 \
        cmocka_unit_test_setup_teardown(test_request_blocked_either_way, setup, teardown),     \
        cmocka_unit_test_setup_teardown(test_request_limit_on_accept, setup, teardown),        \
        cmocka_unit_test_setup_teardown(test_decline, setup, teardown),                        \
        cmocka_unit_test_setup_teardown(test_friend_add_without_consent, setup, teardown),     \
        cmocka_unit_test_setup_teardown(test_friend_remove, setup, teardown),                  \
        cmocka_unit_test_setup_teardown(test_block_ends_friendship, setup, teardown),          \
        cmocka_unit_test_setup_teardown(test_block_errors_and_unblock, setup, teardown),       \
        cmocka_unit_test_setup_teardown(test_members_roles_join_order, setup, teardown),       \
        cmocka_unit_test_setup_teardown(test_leave_creator_to_oldest_admin, setup, teardown),  \
        cmocka_unit_test_setup_teardown(test_leave_creator_to_oldest_member, setup, teardown), \
        cmocka_unit_test_setup_teardown(test_leave_last_member_deletes, setup, teardown),      \
        cmocka_unit_test_setup_teardown(test_leave_errors, setup, teardown),                   \
        cmocka_unit_test_setup_teardown(test_kick_rules, setup, teardown),                     \
        cmocka_unit_test_setup_teardown(test_set_role_rules, setup, teardown),                 \
        cmocka_unit_test_setup_teardown(test_update_rules, setup, teardown),                   \
        cmocka_unit_test_setup_teardown(test_delete_rules, setup, teardown),                   \
        cmocka_unit_test_setup_teardown(test_group_count, setup, teardown),                    \
        cmocka_unit_test_setup_teardown(test_login_groups_one_query, setup, teardown),         \
        cmocka_unit_test_setup_teardown(test_login_friends_one_query, setup, teardown),        \
        cmocka_unit_test_setup_teardown(test_tokens, setup, teardown),                         \
        cmocka_unit_test_setup_teardown(test_token_expiry_and_revoke, setup, teardown),        \
        cmocka_unit_test_setup_teardown(test_token_errors, setup, teardown),                   \
        cmocka_unit_test_setup_teardown(test_password_change_revokes, setup, teardown),        \
        cmocka_unit_test_setup_teardown(test_migration_of_v1_groups, setup, teardown)

#endif
