-- sql/mysql/003-social.sql - migration 3: friends with consent, blocking,
-- group administration, login tokens (issues 12 and 15).
--
-- Applied once, after 001 (the v1 schema) and 002 (the conversation log),
-- by the migration runner.  It changes:
--   * GroupUser: the role "admin" joins "creator" and "normal", and a join
--     order, joinseq, increasing with every join (the oldest admin or
--     member inherits a group its creator leaves).  The table is rebuilt
--     so that existing members are numbered per group, the creator first,
--     then by user id (as in the SQLite migration); key role_order finds a
--     group's oldest admin;
--   * FriendRequest: a pending request from fromid to toid (consent);
--   * UserBlock: userid has blocked blockedid;
--   * LoginToken: one token per (user, device), stored only as the
--     SHA-256 of the token text, with its creation and expiry (epoch
--     seconds).
-- Every query of src/store/mysql_social.c filters on a primary key or on
-- one of the keys below.

CREATE TABLE GroupUser_v3 (
    groupid   INT NOT NULL,
    userid    INT NOT NULL,
    grouprole ENUM('creator', 'admin', 'normal') NOT NULL DEFAULT 'normal',
    joinseq   BIGINT NOT NULL AUTO_INCREMENT,
    PRIMARY KEY (groupid, userid),
    UNIQUE KEY joinseq (joinseq),
    KEY userid (userid),
    KEY role_order (groupid, grouprole, joinseq)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

INSERT INTO GroupUser_v3 (groupid, userid, grouprole)
    SELECT groupid, userid, CAST(grouprole AS CHAR) FROM GroupUser
    ORDER BY groupid, grouprole = 'creator' DESC, userid;

RENAME TABLE GroupUser TO GroupUser_v1, GroupUser_v3 TO GroupUser;
DROP TABLE GroupUser_v1;

CREATE TABLE FriendRequest (
    fromid  INT NOT NULL,
    toid    INT NOT NULL,
    created BIGINT NOT NULL,
    PRIMARY KEY (fromid, toid),
    KEY toid_created (toid, created)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE UserBlock (
    userid    INT NOT NULL,
    blockedid INT NOT NULL,
    PRIMARY KEY (userid, blockedid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE LoginToken (
    userid  INT NOT NULL,
    device  VARBINARY(64) NOT NULL,
    hash    BINARY(32) NOT NULL,
    created BIGINT NOT NULL,
    expires BIGINT NOT NULL,
    PRIMARY KEY (userid, device)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
