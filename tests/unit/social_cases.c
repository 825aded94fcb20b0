/*
 * social_cases.c - the social storage cases shared by test_social.c
 * (SQLite) and test_social_mysql.c (MySQL): every rule and every error
 * path of include/store/social.h, the same calls with the same
 * expectations on both drivers.  See social_cases.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "social_cases.h"

#define RAW_SQL_MAX 256

/* ---- helpers -------------------------------------------------------- */

static struct social_fixture *unmigrated_fixture(void **state)
{
    struct social_fixture *f = *state;

    if (f->store.unavailable)
        skip();
    return f;
}

struct social_fixture *social_case_fixture(void **state)
{
    struct social_fixture *f = unmigrated_fixture(state);

    f->migrate(f);
    return f;
}

static int32_t user(struct social_fixture *f, const char *name)
{
    return new_user(&f->store, name);
}

static int32_t group(struct social_fixture *f, const char *name, int32_t creator)
{
    int32_t g = 0;

    assert_int_equal(f->store.ops->group_create(f->store.st, name, "desc", creator, &g), QC_OK);
    return g;
}

static void join(struct social_fixture *f, int32_t g, int32_t u)
{
    assert_int_equal(f->store.ops->group_join(f->store.st, g, u), QC_OK);
}

static long long raw(struct social_fixture *f, const char *fmt, long long a, long long b)
{
    char sql[RAW_SQL_MAX];

    snprintf(sql, sizeof(sql), fmt, a, b);
    return f->raw_int(f, sql);
}

static void list(struct social_fixture *f,
                 int (*fn)(struct store *, int32_t, store_user_cb, void *), int32_t u,
                 struct seen *s)
{
    memset(s, 0, sizeof(*s));
    assert_int_equal(fn(f->store.st, u, seen_user, s), QC_OK);
}

static void members(struct social_fixture *f, int32_t g, struct seen *s)
{
    memset(s, 0, sizeof(*s));
    assert_int_equal(f->so->group_members(f->store.st, g, seen_member, s), QC_OK);
}

static bool are_friends(struct social_fixture *f, int32_t a, int32_t b)
{
    long long n =
        raw(f, "SELECT count(*) FROM Friend WHERE userid = %lld AND friendid = %lld", a, b);
    long long back =
        raw(f, "SELECT count(*) FROM Friend WHERE userid = %lld AND friendid = %lld", b, a);

    assert_int_equal(n, back); /* friendship is always mutual */
    return n == 1;
}

static long long pending(struct social_fixture *f, int32_t from, int32_t to)
{
    return raw(f, "SELECT count(*) FROM FriendRequest WHERE fromid = %lld AND toid = %lld", from,
               to);
}

static void expect_role(struct social_fixture *f, int32_t g, int32_t u, const char *want)
{
    char role[SOCIAL_ROLE_MAX + 1] = "";

    assert_int_equal(f->so->group_role(f->store.st, g, u, role), QC_OK);
    assert_string_equal(role, want);
}

/* ---- friend requests ------------------------------------------------ */

void test_request_and_accept(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t alice = user(f, "alice"), bob = user(f, "bob"), carol = user(f, "carol");
    int outcome = 0;
    struct seen s;

    assert_int_equal(f->so->friend_request(f->store.st, alice, bob, 10, &outcome), QC_OK);
    assert_int_equal(outcome, SOCIAL_REQUESTED);
    assert_int_equal(f->so->friend_request(f->store.st, alice, bob, 10, &outcome), QC_OK);
    assert_int_equal(outcome, SOCIAL_REQUESTED); /* idempotent: still one request */
    assert_int_equal(pending(f, alice, bob), 1);
    assert_false(are_friends(f, alice, bob));
    assert_int_equal(f->so->friend_request(f->store.st, carol, bob, 10, &outcome), QC_OK);

    list(f, f->so->requests_in, bob, &s);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.ids[0], alice);
    assert_string_equal(s.names[0], "alice");
    assert_int_equal(s.ids[1], carol);
    list(f, f->so->requests_out, alice, &s);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.ids[0], bob);
    assert_string_equal(s.names[0], "bob");
    list(f, f->so->requests_in, alice, &s);
    assert_int_equal(s.n, 0);

    /* bob asks alice back: that accepts. */
    assert_int_equal(f->so->friend_request(f->store.st, bob, alice, 10, &outcome), QC_OK);
    assert_int_equal(outcome, SOCIAL_ACCEPTED);
    assert_true(are_friends(f, alice, bob));
    assert_int_equal(pending(f, alice, bob) + pending(f, bob, alice), 0);
    list(f, f->so->friends, alice, &s);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.ids[0], bob);
    assert_string_equal(s.names[0], "bob");
    list(f, f->so->friends, bob, &s);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.ids[0], alice);
    list(f, f->so->requests_in, bob, &s); /* carol's stays */
    assert_int_equal(s.n, 1);
    assert_int_equal(s.ids[0], carol);

    assert_int_equal(f->so->friend_request(f->store.st, alice, bob, 10, &outcome), QC_EALREADY);
    assert_int_equal(f->so->friend_request(f->store.st, bob, alice, 10, &outcome), QC_EALREADY);
    assert_int_equal(pending(f, alice, bob) + pending(f, bob, alice), 0);
}

void test_request_errors(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t alice = user(f, "alice");
    int outcome = 0;

    assert_int_equal(f->so->friend_request(f->store.st, alice, alice, 10, &outcome), QC_ESELF);
    assert_int_equal(f->so->friend_request(f->store.st, alice, NO_SUCH_ID, 10, &outcome),
                     QC_ENOUSER);
    assert_int_equal(f->raw_int(f, "SELECT count(*) FROM FriendRequest"), 0);
}

void test_request_blocked_either_way(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t alice = user(f, "alice"), bob = user(f, "bob");
    int outcome = 0;

    assert_int_equal(f->so->block(f->store.st, bob, alice), QC_OK);
    assert_int_equal(f->so->friend_request(f->store.st, alice, bob, 10, &outcome), QC_EBLOCKED);
    assert_int_equal(f->so->friend_request(f->store.st, bob, alice, 10, &outcome), QC_EBLOCKED);
    assert_int_equal(f->so->friend_add(f->store.st, alice, bob, 10), QC_EBLOCKED);
    assert_int_equal(f->so->friend_add(f->store.st, bob, alice, 10), QC_EBLOCKED);
    assert_int_equal(f->raw_int(f, "SELECT count(*) FROM FriendRequest"), 0);
    assert_false(are_friends(f, alice, bob));
}

/* Accepting checks limits.max_friends on both sides; a refusal changes nothing. */
void test_request_limit_on_accept(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t alice = user(f, "alice"), bob = user(f, "bob"), carol = user(f, "carol");
    int outcome = 0;

    assert_int_equal(f->so->friend_add(f->store.st, alice, carol, 1), QC_OK);
    assert_int_equal(f->so->friend_request(f->store.st, bob, alice, 1, &outcome), QC_OK);
    /* alice (the accepter) is full */
    assert_int_equal(f->so->friend_request(f->store.st, alice, bob, 1, &outcome), QC_ELIMIT);
    assert_int_equal(pending(f, bob, alice), 1);
    assert_false(are_friends(f, alice, bob));
    /* carol (the requester, asked first) is full */
    assert_int_equal(f->so->friend_remove(f->store.st, alice, carol), QC_OK);
    assert_int_equal(f->so->friend_add(f->store.st, carol, bob, 1), QC_OK);
    assert_int_equal(f->so->friend_request(f->store.st, carol, alice, 2, &outcome), QC_OK);
    assert_int_equal(f->so->friend_request(f->store.st, alice, carol, 1, &outcome), QC_ELIMIT);
    assert_int_equal(pending(f, carol, alice), 1);
    assert_int_equal(f->so->friend_request(f->store.st, alice, carol, 2, &outcome), QC_OK);
    assert_int_equal(outcome, SOCIAL_ACCEPTED);
    assert_true(are_friends(f, alice, carol));
}

void test_decline(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t alice = user(f, "alice"), bob = user(f, "bob");
    int outcome = 0;
    struct seen s;

    assert_int_equal(f->so->friend_request(f->store.st, alice, bob, 10, &outcome), QC_OK);
    assert_int_equal(f->so->friend_decline(f->store.st, alice, bob), QC_ENOUSER); /* wrong way */
    assert_int_equal(f->so->friend_decline(f->store.st, bob, alice), QC_OK);
    list(f, f->so->requests_in, bob, &s);
    assert_int_equal(s.n, 0);
    list(f, f->so->requests_out, alice, &s);
    assert_int_equal(s.n, 0);
    assert_int_equal(f->so->friend_decline(f->store.st, bob, alice), QC_ENOUSER);
    assert_int_equal(f->so->friend_decline(f->store.st, bob, NO_SUCH_ID), QC_ENOUSER);
    assert_false(are_friends(f, alice, bob));
    /* declined is not blocked: alice may ask again */
    assert_int_equal(f->so->friend_request(f->store.st, alice, bob, 10, &outcome), QC_OK);
    assert_int_equal(outcome, SOCIAL_REQUESTED);
}

/* friend_consent = no: the v1 immediate friendship, with blocks and both limits. */
void test_friend_add_without_consent(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t alice = user(f, "alice"), bob = user(f, "bob"), carol = user(f, "carol");
    int outcome = 0;

    assert_int_equal(f->so->friend_add(f->store.st, alice, alice, 10), QC_ESELF);
    assert_int_equal(f->so->friend_add(f->store.st, alice, NO_SUCH_ID, 10), QC_ENOUSER);
    assert_int_equal(f->so->friend_request(f->store.st, bob, alice, 10, &outcome), QC_OK);
    assert_int_equal(f->so->friend_add(f->store.st, alice, bob, 10), QC_OK);
    assert_true(are_friends(f, alice, bob));
    assert_int_equal(pending(f, bob, alice), 0); /* the request is settled */
    assert_int_equal(f->so->friend_add(f->store.st, alice, bob, 10), QC_EALREADY);
    assert_int_equal(f->so->friend_add(f->store.st, bob, alice, 10), QC_EALREADY);
    assert_int_equal(f->so->friend_add(f->store.st, carol, alice, 1), QC_ELIMIT); /* alice full */
    assert_int_equal(f->so->friend_add(f->store.st, alice, carol, 1), QC_ELIMIT);
    assert_false(are_friends(f, alice, carol));

    /* A seed database's one-way row is completed, not refused. */
    f->store.raw_sql(&f->store, "DELETE FROM Friend");
    {
        char sql[RAW_SQL_MAX];

        snprintf(sql, sizeof(sql), "INSERT INTO Friend (userid, friendid) VALUES (%d, %d)",
                 (int)alice, (int)carol);
        f->store.raw_sql(&f->store, sql);
    }
    assert_int_equal(f->so->friend_add(f->store.st, carol, alice, 10), QC_OK);
    assert_true(are_friends(f, alice, carol));
}

void test_friend_remove(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t alice = user(f, "alice"), bob = user(f, "bob"), carol = user(f, "carol");
    struct seen s;

    assert_int_equal(f->so->friend_add(f->store.st, alice, bob, 10), QC_OK);
    assert_int_equal(f->so->friend_add(f->store.st, alice, carol, 10), QC_OK);
    assert_int_equal(f->so->friend_remove(f->store.st, bob, alice), QC_OK);
    assert_false(are_friends(f, alice, bob));
    list(f, f->so->friends, alice, &s);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.ids[0], carol);
    list(f, f->so->friends, bob, &s);
    assert_int_equal(s.n, 0);
    assert_int_equal(f->so->friend_remove(f->store.st, alice, bob), QC_ENOUSER);
    assert_int_equal(f->so->friend_remove(f->store.st, alice, NO_SUCH_ID), QC_ENOUSER);
}

/* ---- blocking ------------------------------------------------------- */

void test_block_ends_friendship(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t alice = user(f, "alice"), bob = user(f, "bob"), carol = user(f, "carol");
    bool blocked = true;
    int outcome = 0;
    struct seen s;

    assert_int_equal(f->so->friend_add(f->store.st, alice, bob, 10), QC_OK);
    assert_int_equal(f->so->friend_request(f->store.st, alice, carol, 10, &outcome), QC_OK);
    assert_int_equal(f->so->is_blocked(f->store.st, alice, bob, &blocked), QC_OK);
    assert_false(blocked);

    assert_int_equal(f->so->block(f->store.st, bob, alice), QC_OK);
    assert_false(are_friends(f, alice, bob));
    assert_int_equal(f->so->is_blocked(f->store.st, bob, alice, &blocked), QC_OK);
    assert_true(blocked);
    assert_int_equal(f->so->is_blocked(f->store.st, alice, bob, &blocked), QC_OK);
    assert_false(blocked); /* one way only */
    list(f, f->so->blocked_list, bob, &s);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.ids[0], alice);
    assert_string_equal(s.names[0], "alice");
    list(f, f->so->blocked_list, alice, &s);
    assert_int_equal(s.n, 0);

    /* Pending requests go, both ways. */
    assert_int_equal(f->so->block(f->store.st, carol, alice), QC_OK);
    assert_int_equal(pending(f, alice, carol), 0);
    assert_int_equal(f->so->friend_request(f->store.st, bob, carol, 10, &outcome), QC_OK);
    assert_int_equal(f->so->friend_request(f->store.st, carol, NO_SUCH_ID, 10, &outcome),
                     QC_ENOUSER);
    assert_int_equal(f->so->block(f->store.st, bob, carol), QC_OK);
    assert_int_equal(pending(f, bob, carol), 0);
    list(f, f->so->blocked_list, bob, &s);
    assert_int_equal(s.n, 2);

    /* Who blocked whom, seen from the blocked side (the server's chat check). */
    list(f, f->so->blocked_by, alice, &s);
    assert_int_equal(s.n, 2);
    assert_true((s.ids[0] == bob && s.ids[1] == carol) || (s.ids[0] == carol && s.ids[1] == bob));
    list(f, f->so->blocked_by, carol, &s);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.ids[0], bob);
    assert_string_equal(s.names[0], "bob");
    list(f, f->so->blocked_by, bob, &s);
    assert_int_equal(s.n, 0);
}

void test_block_errors_and_unblock(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t alice = user(f, "alice"), bob = user(f, "bob");
    bool blocked = false;
    int outcome = 0;

    assert_int_equal(f->so->block(f->store.st, alice, alice), QC_ESELF);
    assert_int_equal(f->so->block(f->store.st, alice, NO_SUCH_ID), QC_ENOUSER);
    assert_int_equal(f->so->block(f->store.st, alice, bob), QC_OK);
    assert_int_equal(f->so->block(f->store.st, alice, bob), QC_EALREADY);
    assert_int_equal(f->so->unblock(f->store.st, bob, alice), QC_ENOUSER); /* not bob's block */
    assert_int_equal(f->so->unblock(f->store.st, alice, bob), QC_OK);
    assert_int_equal(f->so->is_blocked(f->store.st, alice, bob, &blocked), QC_OK);
    assert_false(blocked);
    assert_int_equal(f->so->unblock(f->store.st, alice, bob), QC_ENOUSER);
    assert_int_equal(f->raw_int(f, "SELECT count(*) FROM UserBlock"), 0);
    /* Friendship does not come back by itself, but may be asked for again. */
    assert_int_equal(f->so->friend_request(f->store.st, bob, alice, 10, &outcome), QC_OK);
    assert_int_equal(outcome, SOCIAL_REQUESTED);
}

/* ---- groups --------------------------------------------------------- */

void test_members_roles_join_order(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t zed = user(f, "zed"), bob = user(f, "bob"), amy = user(f, "amy"), al = user(f, "al");
    int32_t g = group(f, "g", zed);
    char role[SOCIAL_ROLE_MAX + 1];
    struct seen s;

    join(f, g, amy);
    join(f, g, bob); /* joins after amy, though created before her */
    assert_int_equal(f->so->group_set_role(f->store.st, g, zed, bob, QC_ROLE_ADMIN), QC_OK);
    members(f, g, &s);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.ids[0], zed);
    assert_string_equal(s.names[0], "zed");
    assert_string_equal(s.extra[0], QC_ROLE_CREATOR);
    assert_int_equal(s.ids[1], amy);
    assert_string_equal(s.extra[1], QC_ROLE_NORMAL);
    assert_int_equal(s.ids[2], bob);
    assert_string_equal(s.extra[2], QC_ROLE_ADMIN);
    expect_role(f, g, bob, QC_ROLE_ADMIN);
    expect_role(f, g, zed, QC_ROLE_CREATOR);
    assert_int_equal(f->so->group_role(f->store.st, g, al, role), QC_ENOTMEMBER);
    assert_int_equal(f->so->group_role(f->store.st, NO_SUCH_ID, al, role), QC_ENOGROUP);
    memset(&s, 0, sizeof(s));
    assert_int_equal(f->so->group_members(f->store.st, NO_SUCH_ID, seen_member, &s), QC_ENOGROUP);
    assert_int_equal(s.n, 0);
    /* the v1 member list shows the admin role too */
    memset(&s, 0, sizeof(s));
    assert_int_equal(f->store.ops->group_members(f->store.st, g, seen_member, &s), QC_OK);
    assert_int_equal(s.n, 3);
}

void test_leave_creator_to_oldest_admin(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t c = user(f, "c"), m1 = user(f, "m1"), a1 = user(f, "a1"), a2 = user(f, "a2");
    int32_t g = group(f, "g", c);
    struct social_leave out = { -1, true };
    struct seen s;

    join(f, g, m1);
    join(f, g, a1);
    join(f, g, a2);
    assert_int_equal(f->so->group_set_role(f->store.st, g, c, a2, QC_ROLE_ADMIN), QC_OK);
    assert_int_equal(f->so->group_set_role(f->store.st, g, c, a1, QC_ROLE_ADMIN), QC_OK);
    assert_int_equal(f->so->group_leave(f->store.st, g, c, &out), QC_OK);
    assert_int_equal(out.new_creator, a1); /* joined before a2; m1 is older but not admin */
    assert_false(out.deleted);
    expect_role(f, g, a1, QC_ROLE_CREATOR);
    expect_role(f, g, a2, QC_ROLE_ADMIN);
    expect_role(f, g, m1, QC_ROLE_NORMAL);
    members(f, g, &s);
    assert_int_equal(s.n, 3);
    assert_int_equal(f->raw_int(f, "SELECT count(*) FROM GroupUser WHERE grouprole = 'creator'"),
                     1);
}

void test_leave_creator_to_oldest_member(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t c = user(f, "c"), late = user(f, "late"), early = user(f, "early");
    int32_t g = group(f, "g", c);
    struct social_leave out = { -1, true };

    join(f, g, early);
    join(f, g, late);
    assert_int_equal(f->so->group_leave(f->store.st, g, c, &out), QC_OK);
    assert_int_equal(out.new_creator, early);
    assert_false(out.deleted);
    expect_role(f, g, early, QC_ROLE_CREATOR);
    /* a normal member leaving hands nothing over */
    assert_int_equal(f->so->group_leave(f->store.st, g, late, &out), QC_OK);
    assert_int_equal(out.new_creator, 0);
    assert_false(out.deleted);
    expect_role(f, g, early, QC_ROLE_CREATOR);
}

void test_leave_last_member_deletes(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t c = user(f, "c"), m = user(f, "m");
    int32_t g = group(f, "g", c), again = 0;
    struct social_leave out = { -1, false };
    struct seen s;
    int n = -1;

    join(f, g, m);
    assert_int_equal(f->so->group_leave(f->store.st, g, c, &out), QC_OK);
    assert_int_equal(out.new_creator, m);
    assert_false(out.deleted);
    assert_int_equal(f->so->group_leave(f->store.st, g, m, &out), QC_OK);
    assert_int_equal(out.new_creator, 0);
    assert_true(out.deleted);
    memset(&s, 0, sizeof(s));
    assert_int_equal(f->so->group_members(f->store.st, g, seen_member, &s), QC_ENOGROUP);
    assert_int_equal(f->store.ops->group_member_count(f->store.st, g, &n), QC_ENOGROUP);
    assert_int_equal(raw(f, "SELECT count(*) FROM AllGroup WHERE groupid = %lld", g, 0), 0);
    assert_int_equal(f->so->group_leave(f->store.st, g, m, &out), QC_ENOGROUP);
    /* the name is free again */
    assert_int_equal(f->store.ops->group_create(f->store.st, "g", "", c, &again), QC_OK);
    assert_true(again != g);
}

void test_leave_errors(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t c = user(f, "c"), x = user(f, "x");
    int32_t g = group(f, "g", c);
    struct social_leave out;

    assert_int_equal(f->so->group_leave(f->store.st, NO_SUCH_ID, c, &out), QC_ENOGROUP);
    assert_int_equal(f->so->group_leave(f->store.st, g, x, &out), QC_ENOTMEMBER);
    expect_role(f, g, c, QC_ROLE_CREATOR);
}

void test_kick_rules(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t c = user(f, "c"), a = user(f, "a"), a2 = user(f, "a2"), n1 = user(f, "n1");
    int32_t n2 = user(f, "n2"), x = user(f, "x");
    int32_t g = group(f, "g", c);
    char role[SOCIAL_ROLE_MAX + 1];

    join(f, g, a);
    join(f, g, a2);
    join(f, g, n1);
    join(f, g, n2);
    assert_int_equal(f->so->group_set_role(f->store.st, g, c, a, QC_ROLE_ADMIN), QC_OK);
    assert_int_equal(f->so->group_set_role(f->store.st, g, c, a2, QC_ROLE_ADMIN), QC_OK);

    assert_int_equal(f->so->group_kick(f->store.st, NO_SUCH_ID, c, n1), QC_ENOGROUP);
    assert_int_equal(f->so->group_kick(f->store.st, g, x, n1), QC_ENOTMEMBER);
    assert_int_equal(f->so->group_kick(f->store.st, g, n1, n2), QC_ENOTALLOWED);
    assert_int_equal(f->so->group_kick(f->store.st, g, a, a2), QC_ENOTALLOWED);
    assert_int_equal(f->so->group_kick(f->store.st, g, a, c), QC_ENOTALLOWED);
    assert_int_equal(f->so->group_kick(f->store.st, g, c, c), QC_ENOTALLOWED);
    assert_int_equal(f->so->group_kick(f->store.st, g, a, x), QC_ENOTMEMBER);
    assert_int_equal(f->so->group_kick(f->store.st, g, a, n1), QC_OK);
    assert_int_equal(f->so->group_role(f->store.st, g, n1, role), QC_ENOTMEMBER);
    assert_int_equal(f->so->group_kick(f->store.st, g, a, n1), QC_ENOTMEMBER);
    assert_int_equal(f->so->group_kick(f->store.st, g, c, a2), QC_OK);
    assert_int_equal(f->so->group_role(f->store.st, g, a2, role), QC_ENOTMEMBER);
    expect_role(f, g, n2, QC_ROLE_NORMAL);
    assert_int_equal(raw(f, "SELECT count(*) FROM GroupUser WHERE groupid = %lld", g, 0), 3);
}

void test_set_role_rules(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t c = user(f, "c"), a = user(f, "a"), n = user(f, "n"), x = user(f, "x");
    int32_t g = group(f, "g", c);

    join(f, g, a);
    join(f, g, n);
    assert_int_equal(f->so->group_set_role(f->store.st, g, c, a, "creator"), QC_EBADREQ);
    assert_int_equal(f->so->group_set_role(f->store.st, g, c, a, "boss"), QC_EBADREQ);
    assert_int_equal(f->so->group_set_role(f->store.st, g, c, a, ""), QC_EBADREQ);
    assert_int_equal(f->so->group_set_role(f->store.st, NO_SUCH_ID, c, a, QC_ROLE_ADMIN),
                     QC_ENOGROUP);
    assert_int_equal(f->so->group_set_role(f->store.st, g, x, a, QC_ROLE_ADMIN), QC_ENOTMEMBER);
    assert_int_equal(f->so->group_set_role(f->store.st, g, c, x, QC_ROLE_ADMIN), QC_ENOTMEMBER);
    assert_int_equal(f->so->group_set_role(f->store.st, g, n, a, QC_ROLE_ADMIN), QC_ENOTALLOWED);
    assert_int_equal(f->so->group_set_role(f->store.st, g, c, a, QC_ROLE_ADMIN), QC_OK);
    assert_int_equal(f->so->group_set_role(f->store.st, g, c, a, QC_ROLE_ADMIN), QC_EALREADY);
    /* an admin may not hand out roles */
    assert_int_equal(f->so->group_set_role(f->store.st, g, a, n, QC_ROLE_ADMIN), QC_ENOTALLOWED);
    assert_int_equal(f->so->group_set_role(f->store.st, g, c, c, QC_ROLE_NORMAL), QC_ENOTALLOWED);
    expect_role(f, g, c, QC_ROLE_CREATOR);
    assert_int_equal(f->so->group_set_role(f->store.st, g, c, a, QC_ROLE_NORMAL), QC_OK);
    expect_role(f, g, a, QC_ROLE_NORMAL);
    expect_role(f, g, n, QC_ROLE_NORMAL);
}

static void expect_group(struct social_fixture *f, int32_t u, const char *name, const char *desc)
{
    struct seen s;

    memset(&s, 0, sizeof(s));
    assert_int_equal(f->store.ops->user_groups(f->store.st, u, seen_group, &s), QC_OK);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.names[0], name);
    assert_string_equal(s.extra[0], desc);
}

void test_update_rules(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t c = user(f, "c"), a = user(f, "a"), n = user(f, "n"), x = user(f, "x");
    int32_t g = group(f, "g", c), other = group(f, "other", x);
    char longname[QC_NAME_MAX + 2], longdesc[QC_GROUPDESC_MAX + 2];

    join(f, g, a);
    join(f, g, n);
    assert_int_equal(f->so->group_set_role(f->store.st, g, c, a, QC_ROLE_ADMIN), QC_OK);
    assert_int_equal(f->so->group_update(f->store.st, g, a, NULL, NULL), QC_EBADREQ);
    assert_int_equal(f->so->group_update(f->store.st, g, a, "", NULL), QC_EBADREQ);
    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    memset(longdesc, 'd', sizeof(longdesc) - 1);
    longdesc[sizeof(longdesc) - 1] = '\0';
    assert_int_equal(f->so->group_update(f->store.st, g, a, longname, NULL), QC_ETOOLONG);
    assert_int_equal(f->so->group_update(f->store.st, g, a, NULL, longdesc), QC_ETOOLONG);
    assert_int_equal(f->so->group_update(f->store.st, NO_SUCH_ID, a, "z", NULL), QC_ENOGROUP);
    assert_int_equal(f->so->group_update(f->store.st, g, x, "z", NULL), QC_ENOTMEMBER);
    assert_int_equal(f->so->group_update(f->store.st, g, n, "z", NULL), QC_ENOTALLOWED);
    /* a clash changes nothing, not even the description given with it */
    assert_int_equal(f->so->group_update(f->store.st, g, a, "other", "new"), QC_EGROUPTAKEN);
    expect_group(f, n, "g", "desc");

    assert_int_equal(f->so->group_update(f->store.st, g, a, "renamed", NULL), QC_OK);
    expect_group(f, n, "renamed", "desc");
    assert_int_equal(f->so->group_update(f->store.st, g, c, NULL, "about"), QC_OK);
    expect_group(f, n, "renamed", "about");
    assert_int_equal(f->so->group_update(f->store.st, g, c, "renamed", ""), QC_OK);
    expect_group(f, n, "renamed", "");
    expect_group(f, x, "other", "desc");
    (void)other;
}

void test_delete_rules(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t c = user(f, "c"), a = user(f, "a"), x = user(f, "x");
    int32_t g = group(f, "g", c), keep = group(f, "keep", c);
    int count = -1;

    join(f, g, a);
    assert_int_equal(f->so->group_set_role(f->store.st, g, c, a, QC_ROLE_ADMIN), QC_OK);
    assert_int_equal(f->so->group_delete(f->store.st, NO_SUCH_ID, c), QC_ENOGROUP);
    assert_int_equal(f->so->group_delete(f->store.st, g, x), QC_ENOTMEMBER);
    assert_int_equal(f->so->group_delete(f->store.st, g, a), QC_ENOTALLOWED);
    assert_int_equal(f->so->group_delete(f->store.st, g, c), QC_OK);
    assert_int_equal(raw(f, "SELECT count(*) FROM GroupUser WHERE groupid = %lld", g, 0), 0);
    assert_int_equal(raw(f, "SELECT count(*) FROM AllGroup WHERE groupid = %lld", g, 0), 0);
    assert_int_equal(f->so->group_delete(f->store.st, g, c), QC_ENOGROUP);
    assert_int_equal(f->so->group_count(f->store.st, a, &count), QC_OK);
    assert_int_equal(count, 0);
    assert_int_equal(f->so->group_count(f->store.st, c, &count), QC_OK);
    assert_int_equal(count, 1);
    (void)keep;
}

void test_group_count(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t c = user(f, "c"), m = user(f, "m");
    int32_t g1 = group(f, "g1", c), g2 = group(f, "g2", m);
    struct social_leave out;
    int count = -1;

    assert_int_equal(f->so->group_count(f->store.st, m, &count), QC_OK);
    assert_int_equal(count, 1); /* created */
    join(f, g1, m);
    assert_int_equal(f->so->group_count(f->store.st, m, &count), QC_OK);
    assert_int_equal(count, 2); /* created + joined */
    assert_int_equal(f->so->group_count(f->store.st, NO_SUCH_ID, &count), QC_OK);
    assert_int_equal(count, 0);
    assert_int_equal(f->so->group_leave(f->store.st, g2, m, &out), QC_OK);
    assert_true(out.deleted);
    assert_int_equal(f->so->group_count(f->store.st, m, &count), QC_OK);
    assert_int_equal(count, 1);
}

/* ---- login lists ---------------------------------------------------- */

struct login_rows {
    int rows, groups;
    int32_t last_group;
    int32_t first_user[MANY_GROUPS + 1];
    char first_role[MANY_GROUPS + 1][SOCIAL_ROLE_MAX + 1];
    int members[MANY_GROUPS + 1];
    char last_name[QC_NAME_MAX + 1];
    bool ordered;
};

static void take_login_row(void *arg, int32_t groupid, const char *groupname, const char *groupdesc,
                           int32_t userid, const char *name, const char *role)
{
    struct login_rows *r = arg;

    r->rows++;
    if (groupid != r->last_group) {
        if (groupid < r->last_group)
            r->ordered = false;
        assert_true(r->groups < MANY_GROUPS + 1);
        r->first_user[r->groups] = userid;
        strlcpy(r->first_role[r->groups], role, sizeof(r->first_role[0]));
        r->groups++;
        r->last_group = groupid;
    }
    r->members[r->groups - 1]++;
    strlcpy(r->last_name, groupname, sizeof(r->last_name));
    assert_string_equal(groupdesc, "desc");
    assert_true(name[0] != '\0');
}

/*
 * Every group of a user with every member and role, in one statement: the
 * login reply of a user in many groups costs the same number of queries.
 */
void test_login_groups_one_query(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t me = user(f, "me"), other = user(f, "other"), lone = user(f, "lone");
    struct login_rows r = { .ordered = true };
    char name[QC_NAME_MAX + 1];
    long long before, used;
    int i;

    for (i = 0; i < MANY_GROUPS; i++) {
        snprintf(name, sizeof(name), "g%02d", i);
        if (i % 2 == 0) {
            int32_t g = group(f, name, other);

            join(f, g, me);
        } else {
            int32_t g = group(f, name, me);

            if (i % 4 == 1)
                join(f, g, other);
        }
    }
    before = f->statements(f);
    assert_int_equal(f->so->login_groups(f->store.st, me, take_login_row, &r), QC_OK);
    used = f->statements(f) - before;
    fprintf(stderr, "login_groups: %d groups, %d rows, %lld statement(s)\n", r.groups, r.rows,
            used);
    assert_true(used <= 2);
    assert_int_equal(r.groups, MANY_GROUPS);
    assert_true(r.ordered);
    /* Even groups: other created, me joined.  Odd: me created, other joined every other one. */
    assert_int_equal(r.rows, MANY_GROUPS / 2 * 2 + MANY_GROUPS / 4 * 2 + MANY_GROUPS / 4);
    for (i = 0; i < MANY_GROUPS; i++) {
        assert_int_equal(r.first_user[i], i % 2 == 0 ? other : me); /* join order: creator first */
        assert_string_equal(r.first_role[i], QC_ROLE_CREATOR);
    }
    assert_string_equal(r.last_name, "g39");

    memset(&r, 0, sizeof(r));
    assert_int_equal(f->so->login_groups(f->store.st, lone, take_login_row, &r), QC_OK);
    assert_int_equal(r.rows, 0);
}

void test_login_friends_one_query(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t me = user(f, "me"), ids[LIST_MAX];
    char name[QC_NAME_MAX + 1];
    long long before, used;
    struct seen s;
    int i;

    for (i = 0; i < LIST_MAX; i++) {
        snprintf(name, sizeof(name), "friend%02d", i);
        ids[i] = user(f, name);
        assert_int_equal(f->so->friend_add(f->store.st, me, ids[i], LIST_MAX), QC_OK);
    }
    memset(&s, 0, sizeof(s));
    before = f->statements(f);
    assert_int_equal(f->so->friends(f->store.st, me, seen_user, &s), QC_OK);
    used = f->statements(f) - before;
    assert_true(used <= 1);
    assert_int_equal(s.n, LIST_MAX);
    for (i = 0; i < LIST_MAX; i++) {
        snprintf(name, sizeof(name), "friend%02d", i);
        assert_int_equal(s.ids[i], ids[i]);
        assert_string_equal(s.names[i], name);
    }
}

/* ---- tokens --------------------------------------------------------- */

static bool is_base64url(const char *t)
{
    return strlen(t) == SOCIAL_TOKEN_CHARS &&
           strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
               SOCIAL_TOKEN_CHARS;
}

void test_tokens(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t alice = user(f, "alice"), bob = user(f, "bob");
    char phone[SOCIAL_TOKEN_CHARS + 1], laptop[SOCIAL_TOKEN_CHARS + 1];
    char dflt[SOCIAL_TOKEN_CHARS + 1], device[SOCIAL_DEVICE_MAX + 1];
    char sql[RAW_SQL_MAX];
    int64_t now = time(NULL), until = now + TEN_DAYS;

    assert_int_equal(f->so->token_create(f->store.st, alice, "phone", until, phone), QC_OK);
    assert_int_equal(f->so->token_create(f->store.st, alice, "laptop", until, laptop), QC_OK);
    assert_int_equal(f->so->token_create(f->store.st, alice, NULL, until, dflt), QC_OK);
    assert_true(is_base64url(phone));
    assert_true(is_base64url(laptop));
    assert_string_not_equal(phone, laptop);

    assert_int_equal(f->so->token_check(f->store.st, alice, phone, now, device), QC_OK);
    assert_string_equal(device, "phone");
    assert_int_equal(f->so->token_check(f->store.st, alice, laptop, now, device), QC_OK);
    assert_string_equal(device, "laptop");
    assert_int_equal(f->so->token_check(f->store.st, alice, dflt, now, NULL), QC_OK);
    assert_int_equal(f->so->token_check(f->store.st, alice, dflt, now, device), QC_OK);
    assert_string_equal(device, SOCIAL_DEVICE_DFLT);
    /* someone else's account */
    assert_int_equal(f->so->token_check(f->store.st, bob, phone, now, device), QC_EBADTOKEN);

    /* Only hashes are stored: no column holds the token's text. */
    assert_int_equal(raw(f, "SELECT count(*) FROM LoginToken WHERE userid = %lld", alice, 0), 3);
    assert_int_equal(f->raw_int(f, "SELECT count(*) FROM LoginToken WHERE length(hash) <> 32"), 0);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM LoginToken WHERE hash = '%s' OR device = '%s'",
             phone, phone);
    assert_int_equal(f->raw_int(f, sql), 0);

    /* A new token for the same device replaces the old one. */
    {
        char newer[SOCIAL_TOKEN_CHARS + 1];

        assert_int_equal(f->so->token_create(f->store.st, alice, "phone", until, newer), QC_OK);
        assert_int_equal(f->so->token_check(f->store.st, alice, phone, now, device), QC_EBADTOKEN);
        assert_int_equal(f->so->token_check(f->store.st, alice, newer, now, device), QC_OK);
        assert_string_equal(device, "phone");
        assert_int_equal(raw(f, "SELECT count(*) FROM LoginToken WHERE userid = %lld", alice, 0),
                         3);
    }
}

void test_token_expiry_and_revoke(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t alice = user(f, "alice");
    char a[SOCIAL_TOKEN_CHARS + 1], b[SOCIAL_TOKEN_CHARS + 1], c[SOCIAL_TOKEN_CHARS + 1];
    int64_t now = time(NULL);
    int revoked = -1;

    assert_int_equal(f->so->token_create(f->store.st, alice, "a", now + 100, a), QC_OK);
    assert_int_equal(f->so->token_create(f->store.st, alice, "b", now + TEN_DAYS, b), QC_OK);
    assert_int_equal(f->so->token_check(f->store.st, alice, a, now + 99, NULL), QC_OK);
    assert_int_equal(f->so->token_check(f->store.st, alice, a, now + 100, NULL), QC_EBADTOKEN);
    assert_int_equal(f->so->token_check(f->store.st, alice, b, now + 100, NULL), QC_OK);

    /* revoke one: the other stays */
    assert_int_equal(f->so->token_revoke(f->store.st, alice, a), QC_OK);
    assert_int_equal(f->so->token_check(f->store.st, alice, a, now, NULL), QC_EBADTOKEN);
    assert_int_equal(f->so->token_check(f->store.st, alice, b, now, NULL), QC_OK);
    assert_int_equal(f->so->token_revoke(f->store.st, alice, a), QC_EBADTOKEN);
    assert_int_equal(f->so->token_revoke(f->store.st, alice, "not-a-token"), QC_EBADTOKEN);

    assert_int_equal(f->so->token_create(f->store.st, alice, "c", now + TEN_DAYS, c), QC_OK);
    assert_int_equal(f->so->token_revoke_all(f->store.st, alice, &revoked), QC_OK);
    assert_int_equal(revoked, 2);
    assert_int_equal(f->so->token_check(f->store.st, alice, b, now, NULL), QC_EBADTOKEN);
    assert_int_equal(f->so->token_check(f->store.st, alice, c, now, NULL), QC_EBADTOKEN);
    assert_int_equal(f->so->token_revoke_all(f->store.st, alice, &revoked), QC_OK);
    assert_int_equal(revoked, 0);
    assert_int_equal(f->so->token_revoke_all(f->store.st, alice, NULL), QC_OK);

    /*
     * An expired token is cleaned up when the user gets a new one.  Made
     * valid (a deadline already past is refused, and a sanitized build can
     * take over a second to get here), then expired by hand.
     */
    assert_int_equal(f->so->token_create(f->store.st, alice, "old", time(NULL) + TEN_DAYS, a),
                     QC_OK);
    {
        char sql[RAW_SQL_MAX];

        snprintf(sql, sizeof(sql), "UPDATE LoginToken SET expires = %lld WHERE userid = %d",
                 (long long)now - 1, (int)alice);
        f->store.raw_sql(&f->store, sql);
    }
    assert_int_equal(f->so->token_check(f->store.st, alice, a, now, NULL), QC_EBADTOKEN);
    assert_int_equal(f->so->token_create(f->store.st, alice, "new", now + 10, b), QC_OK);
    assert_int_equal(raw(f, "SELECT count(*) FROM LoginToken WHERE userid = %lld", alice, 0), 1);
}

void test_token_errors(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t alice = user(f, "alice");
    char t[SOCIAL_TOKEN_CHARS + 1], longdev[SOCIAL_DEVICE_MAX + 2], maxdev[SOCIAL_DEVICE_MAX + 1];
    char wrong[SOCIAL_TOKEN_CHARS + 1], device[SOCIAL_DEVICE_MAX + 1];
    int64_t now = time(NULL);

    memset(longdev, 'd', sizeof(longdev) - 1);
    longdev[sizeof(longdev) - 1] = '\0';
    memset(maxdev, 'm', sizeof(maxdev) - 1);
    maxdev[sizeof(maxdev) - 1] = '\0';
    assert_int_equal(f->so->token_create(f->store.st, NO_SUCH_ID, "d", now + 10, t), QC_ENOUSER);
    assert_int_equal(f->so->token_create(f->store.st, alice, longdev, now + 10, t), QC_ETOOLONG);
    assert_int_equal(f->so->token_create(f->store.st, alice, "d", now - 1, t), QC_EBADREQ);
    assert_int_equal(f->raw_int(f, "SELECT count(*) FROM LoginToken"), 0);
    assert_int_equal(f->so->token_create(f->store.st, alice, maxdev, now + 10, t), QC_OK);
    assert_int_equal(f->so->token_check(f->store.st, alice, t, now, device), QC_OK);
    assert_string_equal(device, maxdev);

    /* Malformed tokens: wrong length, wrong alphabet, empty, NULL. */
    assert_int_equal(f->so->token_check(f->store.st, alice, "", now, NULL), QC_EBADTOKEN);
    assert_int_equal(f->so->token_check(f->store.st, alice, NULL, now, NULL), QC_EBADTOKEN);
    memcpy(wrong, t, sizeof(wrong));
    wrong[5] = '=';
    assert_int_equal(f->so->token_check(f->store.st, alice, wrong, now, NULL), QC_EBADTOKEN);
    wrong[SOCIAL_TOKEN_CHARS - 1] = '\0';
    assert_int_equal(f->so->token_check(f->store.st, alice, wrong, now, NULL), QC_EBADTOKEN);
    /* Right shape, one character off. */
    memcpy(wrong, t, sizeof(wrong));
    wrong[0] = wrong[0] == 'A' ? 'B' : 'A';
    assert_int_equal(f->so->token_check(f->store.st, alice, wrong, now, NULL), QC_EBADTOKEN);
    assert_int_equal(f->so->token_check(f->store.st, NO_SUCH_ID, t, now, NULL), QC_EBADTOKEN);
}

void test_password_change_revokes(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t alice = user(f, "alice"), bob = user(f, "bob");
    char a[SOCIAL_TOKEN_CHARS + 1], b[SOCIAL_TOKEN_CHARS + 1], longhash[QC_HASH_MAX + 2];
    int64_t now = time(NULL);
    struct store_user u;

    assert_int_equal(f->so->token_create(f->store.st, alice, "phone", now + 100, a), QC_OK);
    assert_int_equal(f->so->token_create(f->store.st, bob, "phone", now + 100, b), QC_OK);
    assert_int_equal(f->so->password_change(f->store.st, alice, "$y$new"), QC_OK);
    assert_int_equal(f->store.ops->user_get(f->store.st, alice, &u), QC_OK);
    assert_string_equal(u.password, "$y$new");
    assert_int_equal(f->so->token_check(f->store.st, alice, a, now, NULL), QC_EBADTOKEN);
    assert_int_equal(f->so->token_check(f->store.st, bob, b, now, NULL), QC_OK);

    memset(longhash, 'h', sizeof(longhash) - 1);
    longhash[sizeof(longhash) - 1] = '\0';
    assert_int_equal(f->so->password_change(f->store.st, bob, longhash), QC_ETOOLONG);
    assert_int_equal(f->so->password_change(f->store.st, NO_SUCH_ID, "$y$x"), QC_ENOUSER);
    assert_int_equal(f->so->token_check(f->store.st, bob, b, now, NULL), QC_OK);
    assert_int_equal(f->store.ops->user_get(f->store.st, bob, &u), QC_OK);
    assert_string_equal(u.password, "$y$hash");
}

/* ---- the migration -------------------------------------------------- */

/* v1 groups survive 003: members, roles, creator first in join order. */
void test_migration_of_v1_groups(void **state)
{
    struct social_fixture *f = unmigrated_fixture(state);
    int32_t b = user(f, "b"), a = user(f, "a"), c = user(f, "c");
    int32_t g = group(f, "g", c), h = group(f, "h", a);
    struct social_leave out;
    struct seen s;

    join(f, g, b);
    join(f, g, a);
    join(f, h, b);
    f->migrate(f);
    members(f, g, &s);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.ids[0], c);
    assert_string_equal(s.extra[0], QC_ROLE_CREATOR);
    assert_string_equal(s.extra[1], QC_ROLE_NORMAL);
    assert_string_equal(s.extra[2], QC_ROLE_NORMAL);
    members(f, h, &s);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.ids[0], a);
    /* v1 statements still work on the new table, and the new rules too */
    join(f, h, c);
    assert_int_equal(f->store.ops->group_join(f->store.st, h, c), QC_EALREADY);
    assert_int_equal(f->so->group_set_role(f->store.st, h, a, c, QC_ROLE_ADMIN), QC_OK);
    assert_int_equal(f->so->group_leave(f->store.st, h, a, &out), QC_OK);
    assert_int_equal(out.new_creator, c);
    expect_role(f, h, c, QC_ROLE_CREATOR);
}
