/*
 * test_mysql.c - qchatd on the MySQL store, against the private MariaDB of
 * tests/harness/mariadb.sh (its DIR/env exported; without it every test is
 * skipped with a note).
 *
 * Migration: a database built with the seed's exact README schema and rows
 * in the seed's form (plaintext passwords, one-way friend rows, a group,
 * offline messages as the JSON text the seed forwarded) goes through
 * sql/mysql/migrate-from-seed.sql twice, then serves qchatd: the old
 * passwords log in, friends, groups and offline messages arrive in
 * LOGIN_MSG_ACK, and the stored password becomes a yescrypt hash.
 *
 * Outage: with two users logged in, mariadbd is stopped (SIGSTOP: the
 * worst case, a server that accepts and never answers).  Requests that need
 * storage get errno 13 within OUTAGE_MAX_MS, chat between the two goes on;
 * after SIGCONT the same qchatd (no restart) serves storage again.
 */
#include "harness.h"
#include "mysql_env.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#include <mysql.h>

#define SQL_MAX         2048
#define DBNAME_MAX      64
#define OPT_MAX         (PATH_MAX + 64)
#define MIGRATION_FILE  "sql/mysql/migrate-from-seed.sql"
#define SCHEMA_FILE     "sql/mysql/001-base.sql"
#define OUTAGE_MAX_MS   8000  /* storage error while the database hangs */
#define REQUEST_WAIT_MS 15000 /* reply wait in the outage (> OUTAGE_MAX_MS) */
#define RECOVER_MAX_MS  15000 /* storage works again after SIGCONT */
#define UPGRADE_WAIT_MS 5000  /* plaintext password replaced by its hash */
#define POLL_MS         100
#define CONNECT_WAIT_MS 5000 /* every worker's storage thread connected after the start */
#define SEED_TABLES     5
#define ALL_TABLES      6
#define GUARD_MS        60000 /* SIGCONT by a guard process if the test dies */

static const char *const tables[ALL_TABLES] = {
    "User", "Friend", "AllGroup", "GroupUser", "OfflineMessage", "OfflineDropped",
};

/* The seed's README schema, verbatim. */
static const char seed_schema[] =
    "CREATE TABLE User(\n"
    "  id INT NOT NULL AUTO_INCREMENT PRIMARY KEY COMMENT '\xe7\x94\xa8\xe6\x88\xb7id',\n"
    "  name VARCHAR(50) NOT NULL  UNIQUE COMMENT '\xe7\x94\xa8\xe6\x88\xb7\xe5\x90\x8d',\n"
    "  password VARCHAR(50) NOT NULL COMMENT '\xe7\x94\xa8\xe6\x88\xb7\xe5\xaf\x86\xe7\xa0\x81',\n"
    "  state ENUM('online','offline') DEFAULT('offline') COMMENT '\xe5\xbd\x93\xe5\x89\x8d"
    "\xe7\x99\xbb\xe5\xbd\x95\xe7\x8a\xb6\xe6\x80\x81'\n"
    ");\n"
    "CREATE TABLE Friend(\n"
    "  userid INT NOT NULL  COMMENT '\xe7\x94\xa8\xe6\x88\xb7id',\n"
    "  friendid INT NOT NULL  COMMENT '\xe5\xa5\xbd\xe5\x8f\x8bid',\n"
    "  PRIMARY KEY (userid,friendid)\n"
    ");\n"
    "CREATE TABLE AllGroup(\n"
    "  groupid INT NOT NULL AUTO_INCREMENT PRIMARY KEY COMMENT '\xe7\xbe\xa4\xe7\xbb\x84id',\n"
    "  groupname VARCHAR(50) NOT NULL  UNIQUE COMMENT '\xe7\xbe\xa4\xe7\xbb\x84\xe5\x90\x8d"
    "\xe7\xa7\xb0',\n"
    "  groupdesc VARCHAR(200) NOT NULL DEFAULT('') COMMENT'\xe7\xbe\xa4\xe7\xbb\x84\xe5\x8a\x9f"
    "\xe8\x83\xbd\xe6\x8f\x8f\xe8\xbf\xb0'\n"
    ");\n"
    "CREATE TABLE GroupUser(\n"
    "  groupid INT NOT NULL COMMENT '\xe7\xbe\xa4\xe7\xbb\x84id',\n"
    "  userid INT NOT NULL COMMENT '\xe7\xbe\xa4\xe7\xbb\x84\xe6\x88\x90\xe5\x91\x98id',\n"
    "  grouprole ENUM('creator','normal') NOT NULL DEFAULT('normal') COMMENT'\xe7\xbb\x84"
    "\xe5\x86\x85\xe6\x88\x90\xe5\x91\x98\xe8\xa7\x92\xe8\x89\xb2\xe8\xba\xab\xe4\xbb\xbd',\n"
    "  PRIMARY KEY (groupid,userid)\n"
    ");\n"
    "CREATE TABLE OfflineMessage(\n"
    "  userid INT NOT NULL COMMENT '\xe7\x94\xa8\xe6\x88\xb7id',\n"
    "  message VARCHAR(500) NOT NULL COMMENT'\xe7\xa6\xbb\xe7\xba\xbf\xe4\xbf\xa1\xe6\x81\xaf"
    "(Json\xe5\xad\x97\xe7\xac\xa6\xe4\xb8\xb2)'\n"
    ");\n";

/* Seed users (ids 1..3 in a fresh database) with their plaintext passwords. */
#define ZHANG     1
#define JOSE      2
#define LI        3
#define JOSE_NAME "Jos\xc3\xa9" /* stored in a latin1 column by the seed */
#define GROUP_ID  1

static const char *const seed_passwords[] = { NULL, "123456", "pw-jose", "654321" };

/* Messages exactly as the seed forwarded (and stored) them, oldest first. */
static const char seed_chat_to_jose[] =
    "{\"id\":1,\"msgid\":5,\"msg\":\"hello Jos\xc3\xa9\",\"name\":\"zhang san\","
    "\"time\":\"2023-03-01 10:00:00\",\"toid\":2}";
static const char seed_group_chat[] =
    "{\"groupid\":1,\"id\":1,\"msg\":\"hi all\",\"msgid\":9,\"name\":\"zhang san\","
    "\"time\":\"2023-03-01 10:01:00\"}";
static const char seed_chat_to_li[] =
    "{\"id\":1,\"msgid\":5,\"msg\":\"ping\",\"name\":\"zhang san\","
    "\"time\":\"2023-03-01 10:02:00\",\"toid\":3}";

static MYSQL *admin; /* the tests' own connection */
static unsigned db_counter;

/* ---- the database side ------------------------------------------------ */

static bool have_server(void)
{
    return mdb_env.socket[0] != '\0';
}

static void new_database(char *name, size_t size, const char *tag, const char *charset)
{
    snprintf(name, size, "qchat_it%d_%s%u", (int)getpid(), tag, ++db_counter);
    mdb_exec(admin, "CREATE DATABASE `%s` CHARACTER SET %s", name, charset);
}

/* Every table's content, as one checksum line per table. */
static void checksums(const char *db, char *out, size_t size)
{
    char one[SQL_MAX];
    size_t used = 0;

    out[0] = '\0';
    for (int i = 0; i < ALL_TABLES; i++) {
        mdb_text(admin, one, sizeof(one),
                 "SELECT concat(count(*), ':', coalesce(sum(crc32("
                 "concat_ws('|', %s))), 0)) FROM `%s`.`%s`",
                 i == 0   ? "id, name, password, state"
                 : i == 1 ? "userid, friendid"
                 : i == 2 ? "groupid, groupname, groupdesc"
                 : i == 3 ? "groupid, userid, grouprole"
                 : i == 4 ? "id, userid, message"
                          : "userid, dropped",
                 db, tables[i]);
        used += (size_t)snprintf(out + used, size - used, "%s=%s ", tables[i], one);
        H_CHECK(used < size, "checksum buffer too small");
    }
}

/* ---- the server side -------------------------------------------------- */

static char opt_socket[OPT_MAX], opt_user[OPT_MAX], opt_pwfile[OPT_MAX], opt_db[OPT_MAX];

static void start_on(const char *db)
{
    const char *const opts[] = {
        "storage.driver=mysql", opt_socket, opt_user, opt_pwfile, opt_db, NULL
    };

    snprintf(opt_socket, sizeof(opt_socket), "storage.socket=%s", mdb_env.socket);
    snprintf(opt_user, sizeof(opt_user), "storage.user=%s", mdb_env.user);
    snprintf(opt_pwfile, sizeof(opt_pwfile), "storage.password_file=%s", mdb_env.password_file);
    snprintf(opt_db, sizeof(opt_db), "storage.database=%s", db);
    H_CHECK(server_start(opts) == 0, "qchatd on the mysql store (database %s) did not start", db);
}

/* Login with a plaintext password; returns the connection, *ack the reply. */
static struct qclient *login(int32_t id, const char *password, struct json_object **ack)
{
    struct h_user u = { .id = id };

    snprintf(u.password, sizeof(u.password), "%s", password);
    snprintf(u.name, sizeof(u.name), "user %d", id);
    return h_login(&u, ack);
}

/* The item of a LOGIN_MSG_ACK array whose "id" (or key) is want, parsed; NULL if none. */
static struct json_object *find_item(struct json_object *ack, const char *array, const char *key,
                                     int64_t want)
{
    size_t n = h_arr_len_opt(ack, array);

    for (size_t i = 0; i < n; i++) {
        struct json_object *item = h_parse_item(h_arr(ack, array), i, array);
        if (h_int(item, key) == want)
            return item;
        json_object_put(item);
    }
    return NULL;
}

static const char *offline_item(struct json_object *ack, size_t i)
{
    struct json_object *arr = h_arr(ack, "offlinemsg"), *v;

    H_CHECK(i < json_object_array_length(arr), "offlinemsg[%zu] missing: %s", i, h_json(ack));
    v = json_object_array_get_idx(arr, i);
    H_CHECK(json_object_is_type(v, json_type_string), "offlinemsg[%zu] must be a string", i);
    return json_object_get_string(v);
}

/*
 * An offline item is the seed's stored message plus its place in the log
 * ("cseq", added by the server since the conversation log): equal to the
 * seed's object once cseq is taken out.
 */
static bool seed_message_with_cseq(const char *item, const char *seed)
{
    struct json_object *got = json_tokener_parse(item), *want = json_tokener_parse(seed), *v;
    bool ok = got && want && json_object_object_get_ex(got, "cseq", &v) &&
              json_object_is_type(v, json_type_int) && json_object_get_int64(v) > 0;
    if (ok) {
        json_object_object_del(got, "cseq");
        ok = json_object_equal(got, want);
    }
    json_object_put(got);
    json_object_put(want);
    return ok;
}

static bool password_hashed(void *arg)
{
    const char *db = arg;
    char pw[512];

    mdb_text(admin, pw, sizeof(pw), "SELECT password FROM `%s`.User WHERE id = %d", db, JOSE);
    return strncmp(pw, "$y$", 3) == 0;
}

/* ---- migration ---------------------------------------------------------- */

static void fill_seed(const char *db)
{
    MYSQL *m = mdb_connect(db, CLIENT_MULTI_STATEMENTS);
    char sql[SQL_MAX * 2];

    mdb_run(m, seed_schema, "the seed's README schema");
    /* As the seed left them: states stuck 'online' after a crash, NULL, one-way friends. */
    snprintf(sql, sizeof(sql),
             "INSERT INTO User (name, password, state) VALUES ('zhang san', '%s', 'online'),"
             " ('" JOSE_NAME "', '%s', NULL), ('li si', '%s', 'offline');"
             "INSERT INTO Friend VALUES (%d, %d), (%d, %d), (%d, %d);"
             "INSERT INTO AllGroup (groupname, groupdesc) VALUES ('study', 'study group');"
             "INSERT INTO GroupUser VALUES (%d, %d, 'creator'), (%d, %d, 'normal');",
             seed_passwords[ZHANG], seed_passwords[JOSE], seed_passwords[LI], ZHANG, JOSE, JOSE,
             ZHANG, ZHANG, LI, GROUP_ID, ZHANG, GROUP_ID, JOSE);
    mdb_run(m, sql, "seed rows");
    snprintf(sql, sizeof(sql),
             "INSERT INTO OfflineMessage VALUES (%d, '%s'), (%d, '%s'),"
             " (%d, '%s')",
             JOSE, seed_chat_to_jose, LI, seed_chat_to_li, JOSE, seed_group_chat);
    mdb_run(m, sql, "seed offline messages");
    mysql_close(m);
}

static void migrate_twice(const char *db)
{
    MYSQL *m = mdb_connect(db, CLIENT_MULTI_STATEMENTS);
    char before[SQL_MAX], after[SQL_MAX], fresh_db[DBNAME_MAX], a[SQL_MAX * 2], b[SQL_MAX * 2];
    MYSQL *f;

    mdb_run_file(m, MIGRATION_FILE);
    checksums(db, before, sizeof(before));
    mdb_run_file(m, MIGRATION_FILE);
    checksums(db, after, sizeof(after));
    H_CHECK(strcmp(before, after) == 0, "a second migration changed rows:\n  %s\n  %s", before,
            after);
    mysql_close(m);

    /* The migrated tables are exactly those of schema.sql. */
    new_database(fresh_db, sizeof(fresh_db), "fresh", "utf8mb4");
    f = mdb_connect(fresh_db, CLIENT_MULTI_STATEMENTS);
    mdb_run_file(f, SCHEMA_FILE);
    mysql_close(f);
    for (int i = 0; i < ALL_TABLES; i++) {
        mdb_table_definition(admin, db, tables[i], a, sizeof(a));
        mdb_table_definition(admin, fresh_db, tables[i], b, sizeof(b));
        H_CHECK(strcmp(a, b) == 0, "migrated %s differs from schema.sql:\n%s\n---\n%s", tables[i],
                a, b);
    }
    mdb_exec(admin, "DROP DATABASE `%s`", fresh_db);
}

static void check_jose(const char *db)
{
    struct json_object *ack = NULL, *item, *users, *member;
    struct qclient *c = login(JOSE, seed_passwords[JOSE], &ack);
    char pw[512];

    H_CHECK(strcmp(h_str(ack, "name"), JOSE_NAME) == 0, "name converted to UTF-8: %s", h_json(ack));
    item = find_item(ack, "friends", "id", ZHANG);
    H_CHECK(item != NULL, "friends[] must list zhang san: %s", h_json(ack));
    H_CHECK(strcmp(h_str(item, "name"), "zhang san") == 0, "friend name: %s", h_json(item));
    json_object_put(item);
    H_CHECK(h_arr_len_opt(ack, "friends") == 1, "one friend: %s", h_json(ack));

    item = find_item(ack, "groups", "groupid", GROUP_ID);
    H_CHECK(item != NULL, "groups[] must list the seed's group: %s", h_json(ack));
    H_CHECK(strcmp(h_str(item, "groupname"), "study") == 0 &&
                strcmp(h_str(item, "groupdesc"), "study group") == 0,
            "group: %s", h_json(item));
    users = h_arr(item, "users");
    H_CHECK(json_object_array_length(users) == 2, "two members: %s", h_json(item));
    member = find_item(item, "users", "userid", ZHANG);
    H_CHECK(member != NULL && strcmp(h_str(member, "role"), "creator") == 0,
            "zhang san is the creator: %s", h_json(item));
    json_object_put(member);
    member = find_item(item, "users", "userid", JOSE);
    H_CHECK(member != NULL && strcmp(h_str(member, "role"), "normal") == 0,
            "Jose is a normal member: %s", h_json(item));
    json_object_put(member);
    json_object_put(item);

    H_CHECK(h_arr_len_opt(ack, "offlinemsg") == 2, "two offline messages: %s", h_json(ack));
    H_CHECK(seed_message_with_cseq(offline_item(ack, 0), seed_chat_to_jose) &&
                seed_message_with_cseq(offline_item(ack, 1), seed_group_chat),
            "offline messages as the seed stored them, oldest first: %s", h_json(ack));
    json_object_put(ack);
    h_close(c);

    H_CHECK(h_wait_for(password_hashed, (void *)db, UPGRADE_WAIT_MS),
            "the plaintext password must become a yescrypt hash within %d ms", UPGRADE_WAIT_MS);
    mdb_text(admin, pw, sizeof(pw), "SELECT password FROM `%s`.User WHERE id = %d", db, JOSE);
    H_CHECK(strstr(pw, seed_passwords[JOSE]) == NULL, "the hash must not hold the password");

    /* The hash works, the queue is empty, a wrong password is refused. */
    c = login(JOSE, seed_passwords[JOSE], &ack);
    H_CHECK(h_arr_len_opt(ack, "offlinemsg") == 0, "messages delivered once: %s", h_json(ack));
    json_object_put(ack);
    h_close(c);
    c = h_connect();
    ack = NULL;
    H_CHECK(qclient_login(c, JOSE, "wrong", false, &ack, H_REPLY_MS) == QC_EAUTH,
            "a wrong password must get errno 1: %s", h_json(ack));
    json_object_put(ack);
    h_close(c);
}

static void check_zhang_and_li(void)
{
    struct json_object *ack = NULL, *item;
    struct qclient *zhang = login(ZHANG, seed_passwords[ZHANG], &ack), *li;
    int64_t seq;

    H_CHECK(h_arr_len_opt(ack, "friends") == 2, "zhang san's two friends: %s", h_json(ack));
    item = find_item(ack, "friends", "id", JOSE);
    H_CHECK(item != NULL && strcmp(h_str(item, "name"), JOSE_NAME) == 0, "Jose listed: %s",
            h_json(ack));
    json_object_put(item);
    H_CHECK(h_arr_len_opt(ack, "groups") == 1 && h_arr_len_opt(ack, "offlinemsg") == 0,
            "one group, no messages: %s", h_json(ack));
    json_object_put(ack);

    /* li si: the seed's one-way row lists him for zhang san only. */
    li = login(LI, seed_passwords[LI], &ack);
    H_CHECK(h_arr_len_opt(ack, "friends") == 0, "li si has no friend row: %s", h_json(ack));
    H_CHECK(h_arr_len_opt(ack, "offlinemsg") == 1 &&
                seed_message_with_cseq(offline_item(ack, 0), seed_chat_to_li),
            "li si's message: %s", h_json(ack));
    json_object_put(ack);
    /* Adding back completes the friendship; a new user gets the next id. */
    seq = h_next_seq();
    H_CHECK(qclient_add_friend(li, ZHANG, seq, H_REPLY_MS) == 0, "li si adds zhang san back");
    h_close(li);
    li = login(LI, seed_passwords[LI], &ack);
    H_CHECK(h_arr_len_opt(ack, "friends") == 1, "now friends: %s", h_json(ack));
    json_object_put(ack);
    h_close(li);
    h_close(zhang);
}

static void test_migrate_seed_database(void **state)
{
    char db[DBNAME_MAX];
    struct h_user u;
    struct qclient *c;

    if (!have_server())
        skip();
    /* A seed server of the time: latin1 by default. */
    new_database(db, sizeof(db), "seed", "latin1");
    fill_seed(db);
    migrate_twice(db);
    start_on(db);
    check_jose(db);
    check_zhang_and_li();
    c = h_new_user(&u, "postmig");
    H_CHECK(u.id > LI, "a new user after the seed's: id %d", u.id);
    h_close(c);
    h_stop_and_check_clean();
    server_stop(); /* removes its directory before the next start */
    mdb_exec(admin, "DROP DATABASE `%s`", db);
}

/* ---- qchatd -t ------------------------------------------------------------ */

/* Run qchatd ARG on database db; out: its stdout and stderr.  Returns its exit status. */
static int run_qchatd_on(const char *arg, const char *db, char *out, size_t outlen)
{
    const char *bdir = getenv("B");
    char cmd[PATH_MAX * 4];
    snprintf(cmd, sizeof cmd,
             "%s/qchatd %s -o storage.driver=mysql -o 'storage.socket=%s' -o 'storage.user=%s'"
             " -o 'storage.password_file=%s' -o storage.database=%s -o log.level=info 2>&1",
             bdir && *bdir ? bdir : "build", arg, mdb_env.socket, mdb_env.user,
             mdb_env.password_file, db);
    return h_run_capture(cmd, out, outlen);
}

/*
 * qchatd -t, like nginx -t, changes nothing: against a database one schema
 * version behind (an older qchatd still serving it) it says what a start
 * would migrate and leaves the version where it was; an older qchatd would
 * otherwise refuse the database at its next start.  A database newer than
 * the binary fails the test, as it would fail the start.
 */
static void test_config_test_migrates_nothing(void **state)
{
    char db[DBNAME_MAX], out[4096], want[128], now[32], after[32];

    if (!have_server())
        skip();
    new_database(db, sizeof(db), "cfgt", "utf8mb4");
    H_CHECK(run_qchatd_on("--init-db", db, out, sizeof out) == 0, "--init-db:\n%s", out);
    mdb_text(admin, now, sizeof(now), "SELECT MAX(version) FROM `%s`.SchemaVersion", db);
    int latest = atoi(now);
    H_CHECK(latest > 1, "schema version after --init-db: %s", now);
    mdb_exec(admin, "DELETE FROM `%s`.SchemaVersion WHERE version = %d", db, latest);

    int rc = run_qchatd_on("-t", db, out, sizeof out);
    snprintf(want, sizeof want, "schema version %d; starting (or --init-db) will migrate it to %d",
             latest - 1, latest);
    H_CHECK(rc == 0 && strstr(out, want) != NULL && strstr(out, "test is successful") != NULL,
            "qchatd -t on version %d: exit %d, want \"%s\":\n%s", latest - 1, rc, want, out);
    mdb_text(admin, after, sizeof(after), "SELECT MAX(version) FROM `%s`.SchemaVersion", db);
    H_CHECK(atoi(after) == latest - 1, "qchatd -t migrated the database to %s:\n%s", after, out);

    mdb_exec(admin, "INSERT INTO `%s`.SchemaVersion (version, name) VALUES (%d, 'future')", db,
             latest + 1);
    rc = run_qchatd_on("-t", db, out, sizeof out);
    H_CHECK(rc == 1 && strstr(out, "newer than this qchatd") != NULL &&
                strstr(out, "test failed") != NULL,
            "qchatd -t on a newer schema: exit %d:\n%s", rc, out);
    mdb_exec(admin, "DROP DATABASE `%s`", db);
}

/* ---- outage ------------------------------------------------------------- */

static int outage_teardown(void **state)
{
    mdb_resume_server();
    return h_test_teardown(state);
}

/* A request with seq and its ACK's errno; *ms gets how long it took. */
static int timed(int (*req)(struct qclient *, int32_t, int64_t, int), struct qclient *c,
                 int32_t arg, int64_t *ms)
{
    int64_t t0 = h_now_ms();
    int err = req(c, arg, h_next_seq(), REQUEST_WAIT_MS);

    *ms = h_now_ms() - t0;
    return err;
}

static int add_friend_req(struct qclient *c, int32_t id, int64_t seq, int timeout)
{
    return qclient_add_friend(c, id, seq, timeout);
}

static int create_group_req(struct qclient *c, int32_t n, int64_t seq, int timeout)
{
    char name[H_NAME_LEN];
    int32_t gid = 0;

    h_unique_name(name, sizeof(name), n == 0 ? "outage" : "after");
    return qclient_create_group(c, name, "", seq, &gid, timeout);
}

static int chat_req(struct qclient *c, int32_t toid, int64_t seq, int timeout)
{
    struct json_object *ack = NULL;
    int err = qclient_chat(c, toid, "are you there?", seq, &ack, timeout);

    json_object_put(ack);
    return err;
}

/* The ACK of a chat sent earlier: errno 0 with its cseq, once the database is back. */
static void wait_chat_ack(struct qclient *c, int64_t seq)
{
    int64_t deadline = h_now_ms() + RECOVER_MAX_MS;
    struct json_object *o = NULL;
    while (h_now_ms() < deadline && (o = qclient_recv(c, (int)(deadline - h_now_ms()))) != NULL) {
        if (h_int(o, "msgid") == QC_ACK_MSG && h_int(o, "seq") == seq)
            break;
        json_object_put(o);
        o = NULL;
    }
    H_CHECK(o != NULL, "no ACK for chat seq %lld within %d ms of SIGCONT", (long long)seq,
            RECOVER_MAX_MS);
    H_CHECK(h_int(o, "errno") == 0 && h_has(o, "cseq"), "chat ACK after recovery: %s", h_json(o));
    json_object_put(o);
}

/* Chat a -> b (both online): b gets it, a gets errno 0. */
static void chat_online(struct qclient *a, struct qclient *b, int32_t bid, const char *text)
{
    struct json_object *ack = NULL, *got;
    int err = qclient_chat(a, bid, text, h_next_seq(), &ack, H_REPLY_MS);

    H_CHECK(err == 0, "online chat during the outage: errno %d: %s", err, h_json(ack));
    json_object_put(ack);
    got = h_expect(b, QC_ONE_CHAT_MSG, "the online chat");
    H_CHECK(strcmp(h_str(got, "msg"), text) == 0, "chat text: %s", h_json(got));
    json_object_put(got);
}

/* The connections to database db: qchatd's (the admin connection names no database). */
static int node_connections(const char *db)
{
    return (int)mdb_int(admin,
                        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE db = '%s'", db);
}

static void test_outage_and_recovery(void **state)
{
    struct h_user a, b, c;
    struct qclient *ca, *cb;
    struct json_object *ack = NULL;
    char db[DBNAME_MAX];
    pid_t master, workers[H_WORKERS * 4], after[H_WORKERS * 4];
    int nworkers, err = -1;
    int64_t ms, t0;

    if (!have_server())
        skip();
    new_database(db, sizeof(db), "outage", "utf8mb4");
    start_on(db);
    master = server_master_pid();
    nworkers = server_worker_pids(workers, H_WORKERS * 4);
    /*
     * One connection per worker, its storage thread's (qchatd.conf(5),
     * driver); a worker still starting may not have opened it yet.
     */
    int conns;
    t0 = h_now_ms();
    while ((conns = node_connections(db)) < nworkers && h_now_ms() - t0 < CONNECT_WAIT_MS)
        h_sleep_ms(POLL_MS);
    h_sleep_ms(POLL_MS); /* and no more after */
    conns = node_connections(db);
    print_message("outage: %d workers hold %d database connections\n", nworkers, conns);
    H_CHECK(conns == nworkers, "a node of %d workers holds %d connections to its database",
            nworkers, conns);
    ca = h_new_user(&a, "outA");
    cb = h_new_user(&b, "outB");
    h_new_offline_user(&c, "outC");

    /* Warm: the pair's cseq is in the node's sequencer, no database needed for it. */
    chat_online(ca, cb, b.id, "before");
    mdb_stop_server(GUARD_MS);

    err = timed(add_friend_req, ca, b.id, &ms);
    print_message("outage: ADD_FRIEND answered errno %d after %lld ms\n", err, (long long)ms);
    H_CHECK(err == QC_ESTORAGE && ms <= OUTAGE_MAX_MS,
            "ADD_FRIEND while the database hangs: want errno 13 within %d ms, got %d after %lld ms",
            OUTAGE_MAX_MS, err, (long long)ms);
    err = timed(create_group_req, ca, 0, &ms);
    print_message("outage: CREATE_GROUP answered errno %d after %lld ms\n", err, (long long)ms);
    H_CHECK(err == QC_ESTORAGE && ms <= OUTAGE_MAX_MS, "CREATE_GROUP: errno %d after %lld ms", err,
            (long long)ms);
    err = timed(chat_req, cb, c.id, &ms);
    print_message("outage: chat to an offline user answered errno %d after %lld ms\n", err,
                  (long long)ms);
    H_CHECK(err == QC_ESTORAGE && ms <= OUTAGE_MAX_MS,
            "chat to an offline user: errno %d after %lld ms", err, (long long)ms);
    /* Chat between online users goes on live; the ACKs (after the commit) come later. */
    int64_t seq_ab = h_next_seq(), seq_ba = h_next_seq();
    h_send(ca, "{\"msgid\":5,\"toid\":%d,\"msg\":\"still here\",\"seq\":%lld}", b.id,
           (long long)seq_ab);
    struct json_object *got = h_expect(cb, QC_ONE_CHAT_MSG, "a live chat during the outage");
    H_CHECK(strcmp(h_str(got, "msg"), "still here") == 0, "chat text: %s", h_json(got));
    json_object_put(got);
    h_send(cb, "{\"msgid\":5,\"toid\":%d,\"msg\":\"me too\",\"seq\":%lld}", a.id,
           (long long)seq_ba);
    got = h_expect(ca, QC_ONE_CHAT_MSG, "the answer during the outage");
    H_CHECK(strcmp(h_str(got, "msg"), "me too") == 0, "chat text: %s", h_json(got));
    json_object_put(got);

    mdb_resume_server();
    t0 = h_now_ms();
    wait_chat_ack(ca, seq_ab);
    wait_chat_ack(cb, seq_ba);
    print_message("outage: both chats committed and ACKed %lld ms after SIGCONT\n",
                  (long long)(h_now_ms() - t0));
    t0 = h_now_ms();
    do {
        err = timed(add_friend_req, ca, b.id, &ms);
        if (err != 0)
            h_sleep_ms(POLL_MS);
    } while (err == QC_ESTORAGE && h_now_ms() - t0 < RECOVER_MAX_MS);
    print_message("outage: storage back %lld ms after SIGCONT\n", (long long)(h_now_ms() - t0));
    H_CHECK(err == 0, "ADD_FRIEND after the database came back: errno %d", err);
    t0 = h_now_ms();
    do {
        err = timed(chat_req, cb, c.id, &ms);
        if (err != 0)
            h_sleep_ms(POLL_MS);
    } while (err == QC_ESTORAGE && h_now_ms() - t0 < RECOVER_MAX_MS);
    H_CHECK(err == 0, "chat to an offline user after recovery: errno %d", err);
    err = timed(create_group_req, cb, 1, &ms);
    H_CHECK(err == 0, "CREATE_GROUP after recovery: errno %d", err);

    /* The stored chat arrives; the same processes did all of it. */
    h_close(h_login(&c, &ack));
    H_CHECK(h_arr_len_opt(ack, "offlinemsg") == 1, "the chat stored after recovery: %s",
            h_json(ack));
    json_object_put(ack);
    H_CHECK(server_master_pid() == master, "the master must not have been restarted");
    H_CHECK(server_worker_pids(after, H_WORKERS * 4) == nworkers &&
                memcmp(workers, after, sizeof(pid_t) * (size_t)nworkers) == 0,
            "no worker may have been restarted");
    h_close(ca);
    h_close(cb);
    h_stop_and_check_clean();
    server_stop(); /* removes its directory before the next start */
    mdb_exec(admin, "DROP DATABASE `%s`", db);
}

/* ---- main --------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)mdb_load_env("it_mysql");
    if (have_server())
        admin = mdb_connect(NULL, CLIENT_MULTI_STATEMENTS);
    return 0;
}

static int group_teardown(void **state)
{
    mdb_resume_server();
    if (admin != NULL)
        mysql_close(admin);
    admin = NULL;
    return h_group_teardown(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        H_TEST(test_migrate_seed_database),
        H_TEST(test_config_test_migrates_nothing),
        { "test_outage_and_recovery", h_run_test, NULL, outage_teardown,
          &(struct h_test){ test_outage_and_recovery } },
    };

    h_apply_filter();
    return cmocka_run_group_tests_name("mysql", tests, group_setup, group_teardown);
}
