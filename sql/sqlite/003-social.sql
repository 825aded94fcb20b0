-- sql/sqlite/003-social.sql - migration 3: friends with consent, blocking,
-- group administration, login tokens (issues 12 and 15).
--
-- Applied once, after 001 (the v1 schema) and 002 (the conversation log),
-- by the migration runner, inside its transaction.  It changes:
--   * GroupUser: the role "admin" joins "creator" and "normal", and a join
--     order, joinseq, increasing with every join (the oldest admin or
--     member inherits a group its creator leaves).  SQLite cannot change a
--     CHECK constraint in place, so the table is rebuilt; existing members
--     are numbered per group, the creator first, then by user id.  It
--     becomes a rowid table (joinseq is the rowid) with a UNIQUE key on
--     (groupid, userid), so the v1 statements run unchanged;
--   * FriendRequest: a pending request from fromid to toid (consent);
--   * UserBlock: userid has blocked blockedid;
--   * LoginToken: one token per (user, device), stored only as the
--     SHA-256 of the token text, with its creation and expiry (epoch
--     seconds).
-- Every query of src/store/sqlite_social.c filters on a primary key or
-- on one of the indexes below.

CREATE TABLE GroupUser_v3 (
    joinseq   INTEGER PRIMARY KEY AUTOINCREMENT,
    groupid   INTEGER NOT NULL REFERENCES AllGroup(groupid),
    userid    INTEGER NOT NULL REFERENCES User(id),
    grouprole TEXT NOT NULL DEFAULT 'normal'
              CHECK (grouprole IN ('creator', 'admin', 'normal')),
    UNIQUE (groupid, userid)
);

INSERT INTO GroupUser_v3 (groupid, userid, grouprole)
    SELECT groupid, userid, grouprole FROM GroupUser
    ORDER BY groupid, grouprole = 'creator' DESC, userid;

DROP TABLE GroupUser;
ALTER TABLE GroupUser_v3 RENAME TO GroupUser;

-- Groups of a user (login, limits.max_groups).
CREATE INDEX GroupUser_userid ON GroupUser (userid);
-- The oldest admin of a group.
CREATE INDEX GroupUser_role ON GroupUser (groupid, grouprole, joinseq);

CREATE TABLE FriendRequest (
    fromid  INTEGER NOT NULL REFERENCES User(id),
    toid    INTEGER NOT NULL REFERENCES User(id),
    created INTEGER NOT NULL,
    PRIMARY KEY (fromid, toid)
) WITHOUT ROWID;

-- Requests to a user (requests_in).
CREATE INDEX FriendRequest_toid ON FriendRequest (toid, created);

CREATE TABLE UserBlock (
    userid    INTEGER NOT NULL REFERENCES User(id),
    blockedid INTEGER NOT NULL REFERENCES User(id),
    PRIMARY KEY (userid, blockedid)
) WITHOUT ROWID;

CREATE TABLE LoginToken (
    userid  INTEGER NOT NULL REFERENCES User(id),
    device  TEXT NOT NULL,
    hash    BLOB NOT NULL,
    created INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    PRIMARY KEY (userid, device)
) WITHOUT ROWID;
