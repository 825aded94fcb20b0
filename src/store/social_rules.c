/*
 * social_rules.c - the rules of friendship with consent, blocking, group
 * administration and login tokens, written once over the primitives of
 * social_db.h so that both drivers enforce exactly the same rules (the
 * list of rules is in include/store/social.h).
 *
 * Each public function checks what needs no database, then runs one op
 * through the driver's transact(): a change of more than one row is one
 * transaction, and its checks read inside it (locking rows on MariaDB), so
 * two concurrent requests cannot both pass a check that only one may pass.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "social_db.h"

/* An array of bound values and its length, for the primitives. */
#define VALS(...)                            \
    (const struct sdb_val[]){ __VA_ARGS__ }, \
        (int)(sizeof((const struct sdb_val[]){ __VA_ARGS__ }) / sizeof(struct sdb_val))

#define RANK_NORMAL  1
#define RANK_ADMIN   2
#define RANK_CREATOR 3

/* ---- small queries -------------------------------------------------- */

struct one_int {
    bool found;
    long long value;
};

static void take_first_int(void *arg, const struct sdb_row *row)
{
    struct one_int *o = arg;

    if (!o->found)
        o->value = row->i[0];
    o->found = true;
}

/* First column of the first row of a query; *found false when no row. */
static int query_one(struct sdb *db, const char *sql, bool lock, const struct sdb_val *v, int n,
                     struct one_int *out)
{
    out->found = false;
    out->value = 0;
    return db->p->query(db, sql, lock, v, n, "i", take_first_int, out);
}

static int exec_sql(struct sdb *db, const char *sql, const struct sdb_val *v, int n,
                    long long *changes)
{
    return db->p->exec(db, sql, v, n, changes);
}

/* Run a DELETE that must remove something: QC_ENOUSER when it matched no row. */
static int delete_some(struct sdb *db, const char *sql, const struct sdb_val *v, int n)
{
    long long changes = 0;
    int err = exec_sql(db, sql, v, n, &changes);

    if (err != QC_OK)
        return err;
    return changes > 0 ? QC_OK : QC_ENOUSER;
}

static int both_users_exist(struct sdb *db, int32_t a, int32_t b)
{
    struct one_int o;
    int err = query_one(db, "SELECT count(*) FROM User WHERE id IN (?, ?)", false,
                        VALS(SV_INT(a), SV_INT(b)), &o);

    if (err != QC_OK)
        return err;
    return o.value == 2 ? QC_OK : QC_ENOUSER;
}

static int user_exists(struct sdb *db, int32_t id)
{
    struct one_int o;
    int err = query_one(db, "SELECT 1 FROM User WHERE id = ?", false, VALS(SV_INT(id)), &o);

    if (err != QC_OK)
        return err;
    return o.found ? QC_OK : QC_ENOUSER;
}

/* QC_EBLOCKED when a has blocked b or b has blocked a. */
static int check_not_blocked(struct sdb *db, int32_t a, int32_t b)
{
    struct one_int o;
    int err = query_one(db,
                        "SELECT count(*) FROM UserBlock WHERE (userid = ? AND blockedid = ?)"
                        " OR (userid = ? AND blockedid = ?)",
                        false, VALS(SV_INT(a), SV_INT(b), SV_INT(b), SV_INT(a)), &o);

    if (err != QC_OK)
        return err;
    return o.value > 0 ? QC_EBLOCKED : QC_OK;
}

/* QC_EALREADY when both directions of the friendship exist. */
static int check_not_friends(struct sdb *db, int32_t a, int32_t b)
{
    struct one_int o;
    int err = query_one(db,
                        "SELECT count(*) FROM Friend WHERE (userid = ? AND friendid = ?)"
                        " OR (userid = ? AND friendid = ?)",
                        true, VALS(SV_INT(a), SV_INT(b), SV_INT(b), SV_INT(a)), &o);

    if (err != QC_OK)
        return err;
    return o.value >= 2 ? QC_EALREADY : QC_OK;
}

/* QC_ELIMIT when user already has max_friends friends. */
static int check_room_for_friend(struct sdb *db, int32_t user, int max_friends)
{
    struct one_int o;
    int err = query_one(db, "SELECT count(*) FROM Friend WHERE userid = ?", false,
                        VALS(SV_INT(user)), &o);

    if (err != QC_OK)
        return err;
    return o.value >= max_friends ? QC_ELIMIT : QC_OK;
}

/* One direction; an existing row (a seed's one-way friendship) is kept. */
static int insert_friend_row(struct sdb *db, int32_t user, int32_t friend_id)
{
    int err = exec_sql(db, "INSERT INTO Friend (userid, friendid) VALUES (?, ?)",
                       VALS(SV_INT(user), SV_INT(friend_id)), NULL);

    return err == SDB_DUP ? QC_OK : err;
}

static int delete_requests_between(struct sdb *db, int32_t a, int32_t b)
{
    return exec_sql(db,
                    "DELETE FROM FriendRequest WHERE (fromid = ? AND toid = ?)"
                    " OR (fromid = ? AND toid = ?)",
                    VALS(SV_INT(a), SV_INT(b), SV_INT(b), SV_INT(a)), NULL);
}

/* Both rows, both limits checked, pending requests between them gone. */
static int make_friends(struct sdb *db, int32_t a, int32_t b, int max_friends)
{
    int err;

    if ((err = check_room_for_friend(db, a, max_friends)) != QC_OK ||
        (err = check_room_for_friend(db, b, max_friends)) != QC_OK ||
        (err = insert_friend_row(db, a, b)) != QC_OK ||
        (err = insert_friend_row(db, b, a)) != QC_OK)
        return err;
    return delete_requests_between(db, a, b);
}

/* ---- lists through callbacks --------------------------------------- */

struct user_sink {
    store_user_cb cb;
    void *arg;
};

static void emit_user(void *arg, const struct sdb_row *row)
{
    struct user_sink *k = arg;

    k->cb(k->arg, (int32_t)row->i[0], row->t[1]);
}

struct user_list {
    const char *sql;
    int32_t user;
    struct user_sink sink;
};

static int op_user_list(struct sdb *db, void *arg)
{
    struct user_list *l = arg;

    return db->p->query(db, l->sql, false, VALS(SV_INT(l->user)), "it", emit_user, &l->sink);
}

static int list_users(const struct sdb_prims *p, struct store *st, const char *sql, int32_t user,
                      store_user_cb cb, void *arg)
{
    struct user_list l = { sql, user, { cb, arg } };

    return p->transact(st, op_user_list, &l, false);
}

/* ---- friends -------------------------------------------------------- */

struct friend_args {
    int32_t a, b;
    int max_friends;
    int outcome;
};

static int op_friend_request(struct sdb *db, void *arg)
{
    struct friend_args *f = arg;
    struct one_int asked;
    int err;

    if ((err = both_users_exist(db, f->a, f->b)) != QC_OK ||
        (err = check_not_blocked(db, f->a, f->b)) != QC_OK ||
        (err = check_not_friends(db, f->a, f->b)) != QC_OK)
        return err;
    err = query_one(db, "SELECT 1 FROM FriendRequest WHERE fromid = ? AND toid = ?", true,
                    VALS(SV_INT(f->b), SV_INT(f->a)), &asked);
    if (err != QC_OK)
        return err;
    if (asked.found) {
        f->outcome = SOCIAL_ACCEPTED;
        return make_friends(db, f->a, f->b, f->max_friends);
    }
    f->outcome = SOCIAL_REQUESTED;
    err = exec_sql(db, "INSERT INTO FriendRequest (fromid, toid, created) VALUES (?, ?, ?)",
                   VALS(SV_INT(f->a), SV_INT(f->b), SV_INT(time(NULL))), NULL);
    return err == SDB_DUP ? QC_OK : err;
}

int rules_friend_request(const struct sdb_prims *p, struct store *st, int32_t from, int32_t to,
                         int max_friends, int *outcome)
{
    struct friend_args f = { from, to, max_friends, 0 };
    int err;

    if (from == to)
        return QC_ESELF;
    err = p->transact(st, op_friend_request, &f, true);
    if (err == QC_OK && outcome != NULL)
        *outcome = f.outcome;
    return err;
}

static int op_friend_decline(struct sdb *db, void *arg)
{
    struct friend_args *f = arg;

    return delete_some(db, "DELETE FROM FriendRequest WHERE fromid = ? AND toid = ?",
                       VALS(SV_INT(f->b), SV_INT(f->a)));
}

int rules_friend_decline(const struct sdb_prims *p, struct store *st, int32_t user, int32_t from)
{
    struct friend_args f = { user, from, 0, 0 };

    return p->transact(st, op_friend_decline, &f, true);
}

int rules_requests_in(const struct sdb_prims *p, struct store *st, int32_t user, store_user_cb cb,
                      void *arg)
{
    return list_users(p, st,
                      "SELECT u.id, u.name FROM FriendRequest r JOIN User u ON u.id = r.fromid"
                      " WHERE r.toid = ? ORDER BY r.created, r.fromid",
                      user, cb, arg);
}

int rules_requests_out(const struct sdb_prims *p, struct store *st, int32_t user, store_user_cb cb,
                       void *arg)
{
    return list_users(p, st,
                      "SELECT u.id, u.name FROM FriendRequest r JOIN User u ON u.id = r.toid"
                      " WHERE r.fromid = ? ORDER BY r.created, r.toid",
                      user, cb, arg);
}

static int op_friend_add(struct sdb *db, void *arg)
{
    struct friend_args *f = arg;
    int err;

    if ((err = both_users_exist(db, f->a, f->b)) != QC_OK ||
        (err = check_not_blocked(db, f->a, f->b)) != QC_OK ||
        (err = check_not_friends(db, f->a, f->b)) != QC_OK)
        return err;
    return make_friends(db, f->a, f->b, f->max_friends);
}

int rules_friend_add(const struct sdb_prims *p, struct store *st, int32_t user, int32_t friend_id,
                     int max_friends)
{
    struct friend_args f = { user, friend_id, max_friends, 0 };

    if (user == friend_id)
        return QC_ESELF;
    return p->transact(st, op_friend_add, &f, true);
}

static int delete_friendship(struct sdb *db, int32_t a, int32_t b, long long *changes)
{
    return exec_sql(db,
                    "DELETE FROM Friend WHERE (userid = ? AND friendid = ?)"
                    " OR (userid = ? AND friendid = ?)",
                    VALS(SV_INT(a), SV_INT(b), SV_INT(b), SV_INT(a)), changes);
}

static int op_friend_remove(struct sdb *db, void *arg)
{
    struct friend_args *f = arg;
    long long changes = 0;
    int err = delete_friendship(db, f->a, f->b, &changes);

    if (err != QC_OK)
        return err;
    return changes > 0 ? QC_OK : QC_ENOUSER;
}

int rules_friend_remove(const struct sdb_prims *p, struct store *st, int32_t user,
                        int32_t friend_id)
{
    struct friend_args f = { user, friend_id, 0, 0 };

    return p->transact(st, op_friend_remove, &f, true);
}

int rules_friends(const struct sdb_prims *p, struct store *st, int32_t user, store_user_cb cb,
                  void *arg)
{
    return list_users(p, st,
                      "SELECT u.id, u.name FROM Friend f JOIN User u ON u.id = f.friendid"
                      " WHERE f.userid = ? ORDER BY f.friendid",
                      user, cb, arg);
}

/* ---- blocking ------------------------------------------------------- */

static int op_block(struct sdb *db, void *arg)
{
    struct friend_args *f = arg;
    int err;

    if ((err = user_exists(db, f->b)) != QC_OK)
        return err;
    err = exec_sql(db, "INSERT INTO UserBlock (userid, blockedid) VALUES (?, ?)",
                   VALS(SV_INT(f->a), SV_INT(f->b)), NULL);
    if (err == SDB_DUP)
        return QC_EALREADY;
    if (err != QC_OK || (err = delete_friendship(db, f->a, f->b, NULL)) != QC_OK)
        return err;
    return delete_requests_between(db, f->a, f->b);
}

int rules_block(const struct sdb_prims *p, struct store *st, int32_t user, int32_t target)
{
    struct friend_args f = { user, target, 0, 0 };

    if (user == target)
        return QC_ESELF;
    return p->transact(st, op_block, &f, true);
}

static int op_unblock(struct sdb *db, void *arg)
{
    struct friend_args *f = arg;

    return delete_some(db, "DELETE FROM UserBlock WHERE userid = ? AND blockedid = ?",
                       VALS(SV_INT(f->a), SV_INT(f->b)));
}

int rules_unblock(const struct sdb_prims *p, struct store *st, int32_t user, int32_t target)
{
    struct friend_args f = { user, target, 0, 0 };

    return p->transact(st, op_unblock, &f, true);
}

int rules_blocked_list(const struct sdb_prims *p, struct store *st, int32_t user, store_user_cb cb,
                       void *arg)
{
    return list_users(p, st,
                      "SELECT u.id, u.name FROM UserBlock b JOIN User u ON u.id = b.blockedid"
                      " WHERE b.userid = ? ORDER BY b.blockedid",
                      user, cb, arg);
}

/* Who has blocked user (the server keeps it per session for the chat check). */
int rules_blocked_by(const struct sdb_prims *p, struct store *st, int32_t user, store_user_cb cb,
                     void *arg)
{
    return list_users(p, st,
                      "SELECT u.id, u.name FROM UserBlock b JOIN User u ON u.id = b.userid"
                      " WHERE b.blockedid = ? ORDER BY b.userid",
                      user, cb, arg);
}

struct blocked_args {
    int32_t a, b;
    bool blocked;
};

static int op_is_blocked(struct sdb *db, void *arg)
{
    struct blocked_args *q = arg;
    struct one_int o;
    int err = query_one(db, "SELECT 1 FROM UserBlock WHERE userid = ? AND blockedid = ?", false,
                        VALS(SV_INT(q->a), SV_INT(q->b)), &o);

    q->blocked = o.found;
    return err;
}

int rules_is_blocked(const struct sdb_prims *p, struct store *st, int32_t a, int32_t b,
                     bool *blocked)
{
    struct blocked_args q = { a, b, false };
    int err = p->transact(st, op_is_blocked, &q, false);

    if (err == QC_OK)
        *blocked = q.blocked;
    return err;
}

/* ---- groups --------------------------------------------------------- */

struct group_args {
    int32_t group, by, target;
    const char *role; /* set_role: the new role; group_role: out */
    const char *name, *desc;
    char found_role[SOCIAL_ROLE_MAX + 1];
    struct social_leave leave;
    int count;
};

/* QC_ENOGROUP unless the group exists; lock: hold it until the end (MariaDB). */
static int group_exists(struct sdb *db, int32_t group, bool lock)
{
    struct one_int o;
    int err =
        query_one(db, "SELECT 1 FROM AllGroup WHERE groupid = ?", lock, VALS(SV_INT(group)), &o);

    if (err != QC_OK)
        return err;
    return o.found ? QC_OK : QC_ENOGROUP;
}

struct role_row {
    bool found;
    char role[SOCIAL_ROLE_MAX + 1];
};

static void take_role(void *arg, const struct sdb_row *row)
{
    struct role_row *r = arg;

    r->found = true;
    if (row->len[0] <= SOCIAL_ROLE_MAX) {
        memcpy(r->role, row->t[0], row->len[0]);
        r->role[row->len[0]] = '\0';
    }
}

/* user's role in group: QC_ENOTMEMBER when none. */
static int member_role(struct sdb *db, int32_t group, int32_t user, char role[SOCIAL_ROLE_MAX + 1])
{
    struct role_row r = { false, "" };
    int err = db->p->query(db, "SELECT grouprole FROM GroupUser WHERE groupid = ? AND userid = ?",
                           true, VALS(SV_INT(group), SV_INT(user)), "t", take_role, &r);

    if (err != QC_OK)
        return err;
    if (!r.found)
        return QC_ENOTMEMBER;
    memcpy(role, r.role, sizeof(r.role));
    return QC_OK;
}

/* The group (locked) and by's rank in it. */
static int caller_rank(struct sdb *db, int32_t group, int32_t by, int *rank)
{
    char role[SOCIAL_ROLE_MAX + 1];
    int err;

    if ((err = group_exists(db, group, true)) != QC_OK ||
        (err = member_role(db, group, by, role)) != QC_OK)
        return err;
    *rank = social_role_rank(role);
    return QC_OK;
}

static int op_group_role(struct sdb *db, void *arg)
{
    struct group_args *g = arg;
    int err;

    if ((err = group_exists(db, g->group, false)) != QC_OK)
        return err;
    return member_role(db, g->group, g->target, g->found_role);
}

int rules_group_role(const struct sdb_prims *p, struct store *st, int32_t group, int32_t user,
                     char role[SOCIAL_ROLE_MAX + 1])
{
    struct group_args g = { .group = group, .target = user };
    int err = p->transact(st, op_group_role, &g, false);

    if (err == QC_OK)
        memcpy(role, g.found_role, sizeof(g.found_role));
    return err;
}

struct member_sink {
    store_member_cb cb;
    void *arg;
    int32_t group;
    int rows;
};

static void emit_member(void *arg, const struct sdb_row *row)
{
    struct member_sink *k = arg;

    k->rows++;
    k->cb(k->arg, (int32_t)row->i[0], row->t[1], row->t[2]);
}

/* One query; only an empty answer needs the check that the group exists. */
static int op_group_members(struct sdb *db, void *arg)
{
    struct member_sink *k = arg;
    int err = db->p->query(db,
                           "SELECT u.id, u.name, m.grouprole FROM GroupUser m"
                           " JOIN User u ON u.id = m.userid WHERE m.groupid = ? ORDER BY m.joinseq",
                           false, VALS(SV_INT(k->group)), "itt", emit_member, k);

    if (err != QC_OK || k->rows > 0)
        return err;
    return group_exists(db, k->group, false);
}

int rules_group_members(const struct sdb_prims *p, struct store *st, int32_t group,
                        store_member_cb cb, void *arg)
{
    struct member_sink k = { cb, arg, group, 0 };

    return p->transact(st, op_group_members, &k, false);
}

static int delete_membership(struct sdb *db, int32_t group, int32_t user)
{
    return exec_sql(db, "DELETE FROM GroupUser WHERE groupid = ? AND userid = ?",
                    VALS(SV_INT(group), SV_INT(user)), NULL);
}

static int delete_group_rows(struct sdb *db, int32_t group)
{
    int err = exec_sql(db, "DELETE FROM GroupUser WHERE groupid = ?", VALS(SV_INT(group)), NULL);

    if (err != QC_OK)
        return err;
    return exec_sql(db, "DELETE FROM AllGroup WHERE groupid = ?", VALS(SV_INT(group)), NULL);
}

/* Who inherits a group: the oldest admin, else the oldest member (0: nobody left). */
static int find_heir(struct sdb *db, int32_t group, int32_t *heir)
{
    struct one_int o;
    int err = query_one(db,
                        "SELECT userid FROM GroupUser WHERE groupid = ? AND grouprole = 'admin'"
                        " ORDER BY joinseq LIMIT 1",
                        false, VALS(SV_INT(group)), &o);

    if (err == QC_OK && !o.found)
        err =
            query_one(db, "SELECT userid FROM GroupUser WHERE groupid = ? ORDER BY joinseq LIMIT 1",
                      false, VALS(SV_INT(group)), &o);
    *heir = err == QC_OK && o.found ? (int32_t)o.value : 0;
    return err;
}

static int op_group_leave(struct sdb *db, void *arg)
{
    struct group_args *g = arg;
    int32_t heir = 0;
    int rank = 0, err;

    if ((err = caller_rank(db, g->group, g->by, &rank)) != QC_OK ||
        (err = delete_membership(db, g->group, g->by)) != QC_OK ||
        (err = find_heir(db, g->group, &heir)) != QC_OK)
        return err;
    if (heir == 0) {
        g->leave.deleted = true;
        return delete_group_rows(db, g->group);
    }
    if (rank != RANK_CREATOR)
        return QC_OK;
    g->leave.new_creator = heir;
    return exec_sql(db,
                    "UPDATE GroupUser SET grouprole = 'creator' WHERE groupid = ? AND userid = ?",
                    VALS(SV_INT(g->group), SV_INT(heir)), NULL);
}

int rules_group_leave(const struct sdb_prims *p, struct store *st, int32_t group, int32_t user,
                      struct social_leave *out)
{
    struct group_args g = { .group = group, .by = user };
    int err = p->transact(st, op_group_leave, &g, true);

    if (err == QC_OK && out != NULL)
        *out = g.leave;
    return err;
}

static int op_group_kick(struct sdb *db, void *arg)
{
    struct group_args *g = arg;
    char role[SOCIAL_ROLE_MAX + 1];
    int rank = 0, err;

    if ((err = caller_rank(db, g->group, g->by, &rank)) != QC_OK)
        return err;
    if (rank < RANK_ADMIN)
        return QC_ENOTALLOWED;
    if ((err = member_role(db, g->group, g->target, role)) != QC_OK)
        return err;
    if (social_role_rank(role) >= rank)
        return QC_ENOTALLOWED;
    return delete_membership(db, g->group, g->target);
}

int rules_group_kick(const struct sdb_prims *p, struct store *st, int32_t group, int32_t by,
                     int32_t target)
{
    struct group_args g = { .group = group, .by = by, .target = target };

    return p->transact(st, op_group_kick, &g, true);
}

static int op_group_set_role(struct sdb *db, void *arg)
{
    struct group_args *g = arg;
    char role[SOCIAL_ROLE_MAX + 1];
    int rank = 0, err;

    if ((err = caller_rank(db, g->group, g->by, &rank)) != QC_OK)
        return err;
    if (rank != RANK_CREATOR)
        return QC_ENOTALLOWED;
    if ((err = member_role(db, g->group, g->target, role)) != QC_OK)
        return err;
    if (social_role_rank(role) == RANK_CREATOR)
        return QC_ENOTALLOWED;
    if (strcmp(role, g->role) == 0)
        return QC_EALREADY;
    return exec_sql(db, "UPDATE GroupUser SET grouprole = ? WHERE groupid = ? AND userid = ?",
                    VALS(SV_TEXT(g->role), SV_INT(g->group), SV_INT(g->target)), NULL);
}

int rules_group_set_role(const struct sdb_prims *p, struct store *st, int32_t group, int32_t by,
                         int32_t target, const char *role)
{
    struct group_args g = { .group = group, .by = by, .target = target, .role = role };
    int rank = social_role_rank(role);

    if (rank != RANK_ADMIN && rank != RANK_NORMAL)
        return QC_EBADREQ;
    return p->transact(st, op_group_set_role, &g, true);
}

static int op_group_update(struct sdb *db, void *arg)
{
    struct group_args *g = arg;
    int rank = 0, err;

    if ((err = caller_rank(db, g->group, g->by, &rank)) != QC_OK)
        return err;
    if (rank < RANK_ADMIN)
        return QC_ENOTALLOWED;
    if (g->name != NULL) {
        err = exec_sql(db, "UPDATE AllGroup SET groupname = ? WHERE groupid = ?",
                       VALS(SV_TEXT(g->name), SV_INT(g->group)), NULL);
        if (err == SDB_DUP)
            return QC_EGROUPTAKEN;
        if (err != QC_OK)
            return err;
    }
    if (g->desc == NULL)
        return QC_OK;
    return exec_sql(db, "UPDATE AllGroup SET groupdesc = ? WHERE groupid = ?",
                    VALS(SV_TEXT(g->desc), SV_INT(g->group)), NULL);
}

int rules_group_update(const struct sdb_prims *p, struct store *st, int32_t group, int32_t by,
                       const char *name, const char *desc)
{
    struct group_args g = { .group = group, .by = by, .name = name, .desc = desc };

    if ((name == NULL && desc == NULL) || (name != NULL && name[0] == '\0'))
        return QC_EBADREQ;
    if ((name != NULL && strlen(name) > QC_NAME_MAX) ||
        (desc != NULL && strlen(desc) > QC_GROUPDESC_MAX))
        return QC_ETOOLONG;
    return p->transact(st, op_group_update, &g, true);
}

static int op_group_delete(struct sdb *db, void *arg)
{
    struct group_args *g = arg;
    int rank = 0, err;

    if ((err = caller_rank(db, g->group, g->by, &rank)) != QC_OK)
        return err;
    if (rank != RANK_CREATOR)
        return QC_ENOTALLOWED;
    return delete_group_rows(db, g->group);
}

int rules_group_delete(const struct sdb_prims *p, struct store *st, int32_t group, int32_t by)
{
    struct group_args g = { .group = group, .by = by };

    return p->transact(st, op_group_delete, &g, true);
}

static int op_group_count(struct sdb *db, void *arg)
{
    struct group_args *g = arg;
    struct one_int o;
    int err = query_one(db, "SELECT count(*) FROM GroupUser WHERE userid = ?", false,
                        VALS(SV_INT(g->target)), &o);

    g->count = o.value > INT32_MAX ? INT32_MAX : (int)o.value;
    return err;
}

int rules_group_count(const struct sdb_prims *p, struct store *st, int32_t user, int *count)
{
    struct group_args g = { .target = user };
    int err = p->transact(st, op_group_count, &g, false);

    if (err == QC_OK)
        *count = g.count;
    return err;
}

struct group_row_sink {
    social_group_row_cb cb;
    void *arg;
    int32_t user;
};

static void emit_group_row(void *arg, const struct sdb_row *row)
{
    struct group_row_sink *k = arg;

    k->cb(k->arg, (int32_t)row->i[0], row->t[1], row->t[2], (int32_t)row->i[3], row->t[4],
          row->t[5]);
}

static int op_login_groups(struct sdb *db, void *arg)
{
    struct group_row_sink *k = arg;

    return db->p->query(db,
                        "SELECT g.groupid, g.groupname, g.groupdesc, u.id, u.name, o.grouprole"
                        " FROM GroupUser m JOIN AllGroup g ON g.groupid = m.groupid"
                        " JOIN GroupUser o ON o.groupid = m.groupid JOIN User u ON u.id = o.userid"
                        " WHERE m.userid = ? ORDER BY m.groupid, o.joinseq",
                        false, VALS(SV_INT(k->user)), "ittitt", emit_group_row, k);
}

int rules_login_groups(const struct sdb_prims *p, struct store *st, int32_t user,
                       social_group_row_cb cb, void *arg)
{
    struct group_row_sink k = { cb, arg, user };

    return p->transact(st, op_login_groups, &k, false);
}

/* ---- tokens --------------------------------------------------------- */

struct token_args {
    int32_t user;
    const char *device;
    int64_t expires_at, now;
    uint8_t hash[SOCIAL_HASH_BYTES];
    const char *pwhash;
    /* token_check: what the comparison found */
    bool matched;
    int64_t matched_expires;
    char matched_device[SOCIAL_DEVICE_MAX + 1];
    long long changes;
};

static int op_token_create(struct sdb *db, void *arg)
{
    struct token_args *t = arg;
    int err;

    if ((err = user_exists(db, t->user)) != QC_OK)
        return err;
    /* The device's previous token, and the user's expired ones, go. */
    err = exec_sql(db, "DELETE FROM LoginToken WHERE userid = ? AND (device = ? OR expires <= ?)",
                   VALS(SV_INT(t->user), SV_TEXT(t->device), SV_INT(t->now)), NULL);
    if (err != QC_OK)
        return err;
    return exec_sql(db,
                    "INSERT INTO LoginToken (userid, device, hash, created, expires)"
                    " VALUES (?, ?, ?, ?, ?)",
                    VALS(SV_INT(t->user), SV_TEXT(t->device), SV_BYTES(t->hash, SOCIAL_HASH_BYTES),
                         SV_INT(t->now), SV_INT(t->expires_at)),
                    NULL);
}

int rules_token_create(const struct sdb_prims *p, struct store *st, int32_t user,
                       const char *device, int64_t expires_at, char token[SOCIAL_TOKEN_CHARS + 1])
{
    struct token_args t = { .user = user, .expires_at = expires_at, .now = time(NULL) };
    char fresh[SOCIAL_TOKEN_CHARS + 1];
    int err;

    t.device = social_device_name(device);
    if (t.device == NULL)
        return QC_ETOOLONG;
    if (expires_at <= t.now)
        return QC_EBADREQ;
    social_token_new(fresh);
    if (social_token_hash(fresh, t.hash) != 0)
        return QC_EINTERNAL;
    err = p->transact(st, op_token_create, &t, true);
    if (err == QC_OK)
        memcpy(token, fresh, sizeof(fresh));
    explicit_bzero(fresh, sizeof(fresh));
    return err;
}

/* Every row is compared, whatever matched before: the time says nothing. */
static void compare_token(void *arg, const struct sdb_row *row)
{
    struct token_args *t = arg;
    bool same =
        row->len[0] == SOCIAL_HASH_BYTES && social_hash_equal((const uint8_t *)row->t[0], t->hash);

    if (!same || row->len[1] > SOCIAL_DEVICE_MAX)
        return;
    t->matched = true;
    t->matched_expires = row->i[2];
    memcpy(t->matched_device, row->t[1], row->len[1]);
    t->matched_device[row->len[1]] = '\0';
}

static int op_token_check(struct sdb *db, void *arg)
{
    return db->p->query(db, "SELECT hash, device, expires FROM LoginToken WHERE userid = ?", false,
                        VALS(SV_INT(((struct token_args *)arg)->user)), "bbi", compare_token, arg);
}

int rules_token_check(const struct sdb_prims *p, struct store *st, int32_t user, const char *token,
                      int64_t now, char device[SOCIAL_DEVICE_MAX + 1])
{
    struct token_args t = { .user = user, .now = now };
    int err;

    if (social_token_hash(token, t.hash) != 0)
        return QC_EBADTOKEN;
    err = p->transact(st, op_token_check, &t, false);
    if (err != QC_OK)
        return err;
    if (!t.matched || t.matched_expires <= now)
        return QC_EBADTOKEN;
    if (device != NULL)
        memcpy(device, t.matched_device, sizeof(t.matched_device));
    return QC_OK;
}

static int op_token_revoke(struct sdb *db, void *arg)
{
    struct token_args *t = arg;

    return exec_sql(db, "DELETE FROM LoginToken WHERE userid = ? AND hash = ?",
                    VALS(SV_INT(t->user), SV_BYTES(t->hash, SOCIAL_HASH_BYTES)), &t->changes);
}

int rules_token_revoke(const struct sdb_prims *p, struct store *st, int32_t user, const char *token)
{
    struct token_args t = { .user = user };
    int err;

    if (social_token_hash(token, t.hash) != 0)
        return QC_EBADTOKEN;
    err = p->transact(st, op_token_revoke, &t, true);
    if (err != QC_OK)
        return err;
    return t.changes > 0 ? QC_OK : QC_EBADTOKEN;
}

static int delete_tokens(struct sdb *db, int32_t user, long long *changes)
{
    return exec_sql(db, "DELETE FROM LoginToken WHERE userid = ?", VALS(SV_INT(user)), changes);
}

static int op_token_revoke_all(struct sdb *db, void *arg)
{
    struct token_args *t = arg;

    return delete_tokens(db, t->user, &t->changes);
}

int rules_token_revoke_all(const struct sdb_prims *p, struct store *st, int32_t user, int *revoked)
{
    struct token_args t = { .user = user };
    int err = p->transact(st, op_token_revoke_all, &t, true);

    if (err == QC_OK && revoked != NULL)
        *revoked = t.changes > INT32_MAX ? INT32_MAX : (int)t.changes;
    return err;
}

static int op_password_change(struct sdb *db, void *arg)
{
    struct token_args *t = arg;
    long long changes = 0;
    int err = exec_sql(db, "UPDATE User SET password = ? WHERE id = ?",
                       VALS(SV_TEXT(t->pwhash), SV_INT(t->user)), &changes);

    if (err != QC_OK)
        return err;
    if (changes == 0)
        return QC_ENOUSER;
    return delete_tokens(db, t->user, NULL);
}

int rules_password_change(const struct sdb_prims *p, struct store *st, int32_t user,
                          const char *pwhash)
{
    struct token_args t = { .user = user, .pwhash = pwhash };

    if (strlen(pwhash) > QC_HASH_MAX)
        return QC_ETOOLONG;
    return p->transact(st, op_password_change, &t, true);
}
