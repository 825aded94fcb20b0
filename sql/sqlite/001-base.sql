-- sql/sqlite/001-base.sql - schema version 1 of the embedded SQLite store.
--
-- The seed's tables and columns (User, Friend, AllGroup, GroupUser,
-- OfflineMessage), with these changes:
--   * User.password holds a yescrypt hash (a seed plaintext password is
--     replaced by its hash at the first successful login);
--   * OfflineMessage has an autoincrement id: a user's queue is delivered
--     in id order, and the index on (userid, id) serves both the delivery
--     and the limits.max_offline_messages cap;
--   * OfflineDropped counts, per user, the messages discarded for that cap
--     since the user's last login (reported in LOGIN_MSG_ACK, then reset);
--   * Friend and GroupUser are WITHOUT ROWID tables clustered on their
--     primary key, and the index on GroupUser(userid) covers "groups of a
--     user", so every hot lookup is one B-tree range scan;
--   * foreign keys name the User and AllGroup rows a row depends on
--     (the driver turns on PRAGMA foreign_keys).
--
-- The build embeds every numbered file of this directory (sql/embed.sh);
-- the driver applies those newer than the database's SchemaVersion, in
-- order, each in the one transaction that records it (src/store/sqlite.c).
-- A database made before versioning has these tables and no SchemaVersion:
-- every statement here is idempotent, so it is recognised as version 1.

CREATE TABLE IF NOT EXISTS User (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    name     TEXT NOT NULL UNIQUE,
    password TEXT NOT NULL,
    state    TEXT NOT NULL DEFAULT 'offline' CHECK (state IN ('online', 'offline'))
);

-- Friendship is mutual: one row in each direction.
CREATE TABLE IF NOT EXISTS Friend (
    userid   INTEGER NOT NULL REFERENCES User(id),
    friendid INTEGER NOT NULL REFERENCES User(id),
    PRIMARY KEY (userid, friendid)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS AllGroup (
    groupid   INTEGER PRIMARY KEY AUTOINCREMENT,
    groupname TEXT NOT NULL UNIQUE,
    groupdesc TEXT NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS GroupUser (
    groupid   INTEGER NOT NULL REFERENCES AllGroup(groupid),
    userid    INTEGER NOT NULL REFERENCES User(id),
    grouprole TEXT NOT NULL DEFAULT 'normal' CHECK (grouprole IN ('creator', 'normal')),
    PRIMARY KEY (groupid, userid)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS GroupUser_userid ON GroupUser (userid);

-- message: the JSON object exactly as it would have been forwarded.
CREATE TABLE IF NOT EXISTS OfflineMessage (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    userid  INTEGER NOT NULL REFERENCES User(id),
    message TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS OfflineMessage_userid_id ON OfflineMessage (userid, id);

CREATE TABLE IF NOT EXISTS OfflineDropped (
    userid  INTEGER PRIMARY KEY REFERENCES User(id),
    dropped INTEGER NOT NULL DEFAULT 0
);
