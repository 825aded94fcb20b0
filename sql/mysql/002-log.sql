-- sql/mysql/002-log.sql - schema version 2: the conversation log.
--
-- A conversation is one BIGINT key: a pair of users a < b is (a << 32) | b,
-- a group is -groupid.  Every chat is stored once in Message, numbered by
-- cseq (1, 2, 3, ... per conversation, assigned by the server before the
-- append reaches the store, so PRIMARY KEY (conv, cseq) with INSERT IGNORE
-- makes a replayed append a no-op).  Conversation keeps the highest cseq
-- and its time; ConvCursor keeps, per user and conversation, the highest
-- cseq written to a session of the user (delivered_cseq) and the one the
-- user has read (read_cseq); both only grow.  A group member's cursor
-- starts at the group's last cseq when the member joins.  ts is epoch
-- milliseconds; body is the forwarded JSON object as text.
--
-- The offline queue moves into the log: each OfflineMessage row whose text
-- is a chat (msgid 5 or 9) becomes a message of its conversation, numbered
-- in the queue's order; a group chat queued for several members (identical
-- text) becomes one message.  Each recipient's delivered cursor is left just
-- below its first moved message of that conversation, so it is delivered at
-- the next login.  Rows that are not valid chats stay in OfflineMessage.
-- DDL commits implicitly, so the driver holds GET_LOCK('qchat_schema') while
-- it applies this; if it stops half way, running it again gives the same
-- result (the helper tables are rebuilt, the inserts ignore what exists).

CREATE TABLE IF NOT EXISTS Message (
    conv   BIGINT NOT NULL,
    cseq   BIGINT NOT NULL,
    mid    BIGINT NOT NULL DEFAULT 0,
    sender INT NOT NULL,
    ts     BIGINT NOT NULL,
    body   MEDIUMTEXT NOT NULL,
    PRIMARY KEY (conv, cseq),
    KEY ts (ts)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS Conversation (
    conv      BIGINT NOT NULL PRIMARY KEY,
    last_cseq BIGINT NOT NULL DEFAULT 0,
    last_ts   BIGINT NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS ConvCursor (
    userid         INT NOT NULL,
    conv           BIGINT NOT NULL,
    delivered_cseq BIGINT NOT NULL DEFAULT 0,
    read_cseq      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (userid, conv)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

DROP TABLE IF EXISTS migrate_raw;

DROP TABLE IF EXISTS migrate_queue;

DROP TABLE IF EXISTS migrate_log;

-- The queue's fields as text (NULL when the row is not JSON).
CREATE TABLE migrate_raw ENGINE=InnoDB AS
SELECT o.id, o.userid, o.message,
       JSON_VALUE(j, '$.msgid') AS msgid, JSON_VALUE(j, '$.id') AS sender,
       JSON_VALUE(j, '$.toid') AS toid, JSON_VALUE(j, '$.groupid') AS groupid,
       JSON_VALUE(j, '$.mid') AS mid, JSON_VALUE(j, '$.ts') AS ts,
       JSON_VALUE(j, '$.time') AS tm
FROM (SELECT id, userid, message, IF(JSON_VALID(message), message, NULL) AS j
      FROM OfflineMessage) AS o;

-- The same as numbers, only where they are numbers, and the conversation.
CREATE TABLE migrate_queue ENGINE=InnoDB AS
SELECT id, userid, message, sender, mid, ts,
       CASE WHEN msgid = 5 AND sender > 0 AND toid > 0 AND sender <> toid
                THEN (LEAST(sender, toid) << 32) | GREATEST(sender, toid)
            WHEN msgid = 9 AND sender > 0 AND groupid > 0 THEN -groupid
       END AS conv
FROM (SELECT id, userid, message,
             IF(msgid REGEXP '^[0-9]{1,9}$', CAST(msgid AS SIGNED), NULL) AS msgid,
             IF(sender REGEXP '^[0-9]{1,10}$', CAST(sender AS SIGNED), NULL) AS sender,
             IF(toid REGEXP '^[0-9]{1,10}$', CAST(toid AS SIGNED), NULL) AS toid,
             IF(groupid REGEXP '^[0-9]{1,10}$', CAST(groupid AS SIGNED), NULL) AS groupid,
             IF(mid REGEXP '^[0-9]{1,18}$', CAST(mid AS SIGNED), 0) AS mid,
             CASE WHEN ts REGEXP '^[0-9]{1,15}$' THEN CAST(ts AS SIGNED)
                  WHEN tm REGEXP '^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$'
                      THEN COALESCE(UNIX_TIMESTAMP(tm), 0) * 1000
                  ELSE 0 END AS ts
      FROM migrate_raw) AS r;

DELETE FROM migrate_queue WHERE conv IS NULL OR sender > 2147483647;

-- One log message per chat, numbered in queue order.
CREATE TABLE migrate_log ENGINE=InnoDB AS
SELECT conv, first_id, message, sender, mid, ts,
       ROW_NUMBER() OVER (PARTITION BY conv ORDER BY first_id) AS cseq
FROM (SELECT conv, MIN(id) AS first_id, message, MIN(sender) AS sender, MIN(mid) AS mid,
             MIN(ts) AS ts
      FROM migrate_queue WHERE conv < 0 GROUP BY conv, message
      UNION ALL
      SELECT conv, id, message, sender, mid, ts FROM migrate_queue WHERE conv > 0) AS m;

INSERT IGNORE INTO Message (conv, cseq, mid, sender, ts, body)
SELECT conv, cseq, mid, sender, ts, message FROM migrate_log;

INSERT IGNORE INTO Conversation (conv, last_cseq, last_ts)
SELECT conv, MAX(cseq), MAX(ts) FROM migrate_log GROUP BY conv;

-- Recipients: just below their first queued message of each conversation.
INSERT IGNORE INTO ConvCursor (userid, conv, delivered_cseq, read_cseq)
SELECT q.userid, q.conv, MIN(l.cseq) - 1, MIN(l.cseq) - 1
FROM migrate_queue q
JOIN migrate_log l ON l.conv = q.conv
     AND (l.first_id = q.id OR (q.conv < 0 AND l.message = q.message))
GROUP BY q.userid, q.conv;

-- Everyone else: both users of a pair, every member of a group, at the end.
INSERT IGNORE INTO ConvCursor (userid, conv, delivered_cseq, read_cseq)
SELECT conv >> 32, conv, last_cseq, last_cseq FROM Conversation WHERE conv > 0;

INSERT IGNORE INTO ConvCursor (userid, conv, delivered_cseq, read_cseq)
SELECT conv & 4294967295, conv, last_cseq, last_cseq FROM Conversation WHERE conv > 0;

INSERT IGNORE INTO ConvCursor (userid, conv, delivered_cseq, read_cseq)
SELECT m.userid, -m.groupid, COALESCE(c.last_cseq, 0), COALESCE(c.last_cseq, 0)
FROM GroupUser m LEFT JOIN Conversation c ON c.conv = -m.groupid;

DELETE o FROM OfflineMessage o JOIN migrate_queue q ON q.id = o.id;

DROP TABLE migrate_log;

DROP TABLE migrate_queue;

DROP TABLE migrate_raw;
