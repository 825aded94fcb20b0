-- sql/mysql/migrate-from-seed.sql - turn a seed database into a qchat one, in place.
--
-- The seed (the muduo "ChatServer" this project replaces) created its tables
-- with the README's DDL: plaintext passwords in VARCHAR(50), messages in
-- VARCHAR(500), OfflineMessage without any id, the server's default
-- character set and engine.  This script changes them into the tables of
-- schema.sql, keeping every row:
--   * every table InnoDB and utf8mb4 (utf8mb4_bin), text converted from the
--     character set each column was declared with;
--   * User.password widened to VARCHAR(256).  Plaintext passwords stay as
--     they are: qchatd accepts one at the next successful login and stores
--     its yescrypt hash instead (a stored password not starting with '$' is
--     plaintext);  User.state NOT NULL (a NULL state becomes 'offline');
--   * OfflineMessage gets an auto-increment id, numbered in the rows'
--     existing order (the order the seed stored them, which is the order it
--     would have delivered them), its index on (userid, id), and MEDIUMTEXT
--     for the message.  Messages stay the JSON text the seed forwarded;
--   * GroupUser gets its index on userid; OfflineDropped is created.
-- Friendships stay as the seed stored them: its ADD_FRIEND wrote one row,
-- from the user who added to the friend.  When either of the two adds the
-- other again, qchatd completes the friendship (one row each way).
--
-- Idempotent: running it again changes nothing.  It needs MariaDB 10.0.2 or
-- later (ADD COLUMN IF NOT EXISTS, CREATE INDEX IF NOT EXISTS); each ALTER
-- rebuilds its table, so stop the seed server and take a backup first:
--   mysqldump --single-transaction chat > chat-before-qchat.sql
--   mariadb --default-character-set=utf8mb4 chat < migrate-from-seed.sql
-- If the seed stored UTF-8 bytes in columns declared latin1 (a client that
-- sent UTF-8 over a latin1 connection), convert those columns through
-- VARBINARY first: this script trusts the declared character sets.

SET NAMES utf8mb4;
SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION';

-- New tables in this database default to utf8mb4.
ALTER DATABASE CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

-- User
UPDATE User SET state = 'offline' WHERE state IS NULL;
ALTER TABLE User ENGINE = InnoDB;
ALTER TABLE User CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
ALTER TABLE User
    MODIFY id       INT NOT NULL AUTO_INCREMENT,
    MODIFY name     VARCHAR(50) NOT NULL,
    MODIFY password VARCHAR(256) NOT NULL,
    MODIFY state    ENUM('online', 'offline') NOT NULL DEFAULT 'offline';

-- Friend
ALTER TABLE Friend ENGINE = InnoDB;
ALTER TABLE Friend CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
ALTER TABLE Friend
    MODIFY userid   INT NOT NULL,
    MODIFY friendid INT NOT NULL;

-- AllGroup
ALTER TABLE AllGroup ENGINE = InnoDB;
ALTER TABLE AllGroup CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
ALTER TABLE AllGroup
    MODIFY groupid   INT NOT NULL AUTO_INCREMENT,
    MODIFY groupname VARCHAR(50) NOT NULL,
    MODIFY groupdesc VARCHAR(200) NOT NULL DEFAULT '';

-- GroupUser
ALTER TABLE GroupUser ENGINE = InnoDB;
ALTER TABLE GroupUser CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
ALTER TABLE GroupUser
    MODIFY groupid   INT NOT NULL,
    MODIFY userid    INT NOT NULL,
    MODIFY grouprole ENUM('creator', 'normal') NOT NULL DEFAULT 'normal';
CREATE INDEX IF NOT EXISTS userid ON GroupUser (userid);

-- OfflineMessage: the id is added while the table is still in its old
-- engine, so the rows are numbered in the order they were stored.
ALTER TABLE OfflineMessage
    ADD COLUMN IF NOT EXISTS id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY FIRST;
ALTER TABLE OfflineMessage ENGINE = InnoDB;
ALTER TABLE OfflineMessage CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
ALTER TABLE OfflineMessage
    MODIFY userid  INT NOT NULL,
    MODIFY message MEDIUMTEXT NOT NULL;
CREATE INDEX IF NOT EXISTS userid_id ON OfflineMessage (userid, id);

CREATE TABLE IF NOT EXISTS OfflineDropped (
    userid  INT NOT NULL PRIMARY KEY,
    dropped BIGINT NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
