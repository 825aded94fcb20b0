-- sql/mysql/001-base.sql - schema version 1 for MariaDB / MySQL (storage.driver = mysql).
--
-- The seed's tables and columns (User, Friend, AllGroup, GroupUser,
-- OfflineMessage), so that a seed database can be migrated in place, with
-- these changes:
--   * utf8mb4 everywhere (the seed used the server's default charset);
--   * collation utf8mb4_bin: names compare byte for byte, case-sensitively,
--     exactly as in the SQLite store, so both drivers accept the same set of
--     distinct user and group names.  (Like every MySQL "_bin" collation it
--     ignores trailing spaces in comparisons, so "bob " is taken when "bob"
--     exists; that only ever refuses a look-alike name.)  It works on
--     MariaDB and MySQL alike;
--   * User.password is VARCHAR(256) (QC_HASH_MAX) for yescrypt hashes; a
--     seed plaintext password is replaced by its hash at the first login;
--   * OfflineMessage gets a BIGINT autoincrement id that orders a user's
--     queue, an index on (userid, id) for delivery and for the
--     limits.max_offline_messages cap, and MEDIUMTEXT for the message (a
--     forwarded chat, JSON-escaped, can outgrow TEXT's 64 KiB);
--   * OfflineDropped counts the messages discarded for that cap since the
--     user's last login;
--   * an index on GroupUser(userid) for "groups of a user".
-- No foreign keys: a migrated seed database may hold orphan rows, and the
-- driver checks existence itself where the protocol needs an answer.
--
-- The build embeds every numbered file of this directory (sql/embed.sh);
-- src/store/mysql.c applies those newer than the database's SchemaVersion,
-- in order, at open and for qchatd --init-db.  A seed database is first
-- converted by migrate-from-seed.sql; it then has these tables and no
-- SchemaVersion, and since every statement here is idempotent it is
-- recognised as version 1.  Statements end with ';' at the end of a line.

CREATE TABLE IF NOT EXISTS User (
    id       INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name     VARCHAR(50) NOT NULL,
    password VARCHAR(256) NOT NULL,
    state    ENUM('online', 'offline') NOT NULL DEFAULT 'offline',
    UNIQUE KEY name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Friendship is mutual: one row in each direction.
CREATE TABLE IF NOT EXISTS Friend (
    userid   INT NOT NULL,
    friendid INT NOT NULL,
    PRIMARY KEY (userid, friendid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS AllGroup (
    groupid   INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    groupname VARCHAR(50) NOT NULL,
    groupdesc VARCHAR(200) NOT NULL DEFAULT '',
    UNIQUE KEY groupname (groupname)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS GroupUser (
    groupid   INT NOT NULL,
    userid    INT NOT NULL,
    grouprole ENUM('creator', 'normal') NOT NULL DEFAULT 'normal',
    PRIMARY KEY (groupid, userid),
    KEY userid (userid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- message: the JSON object exactly as it would have been forwarded.
CREATE TABLE IF NOT EXISTS OfflineMessage (
    id      BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    userid  INT NOT NULL,
    message MEDIUMTEXT NOT NULL,
    KEY userid_id (userid, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS OfflineDropped (
    userid  INT NOT NULL PRIMARY KEY,
    dropped BIGINT NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
