-- sql/sqlite/002-log.sql - schema version 2: the conversation log.
--
-- A conversation is one BIGINT key: a pair of users a < b is (a << 32) | b,
-- a group is -groupid.  Every chat is stored once in Message, numbered by
-- cseq (1, 2, 3, ... per conversation, assigned by the server before the
-- append reaches the store, so PRIMARY KEY (conv, cseq) makes a replayed
-- append a no-op).  Conversation keeps the highest cseq and its time;
-- ConvCursor keeps, per user and conversation, the highest cseq written to
-- a session of the user (delivered_cseq) and the one the user has read
-- (read_cseq); both only grow.  A group member's cursor starts at the
-- group's last cseq when the member joins, so the group's past is history,
-- not offline messages.  ts is epoch milliseconds; body is the forwarded
-- JSON object as text.  Message_ts serves retention by age.
--
-- The offline queue moves into the log: each OfflineMessage row whose text
-- is a chat (msgid 5 or 9) becomes a message of its conversation, numbered
-- in the queue's order; a group chat queued for several members (identical
-- text) becomes one message.  Each recipient's delivered cursor is left just
-- below its first moved message of that conversation, so it is delivered at
-- the next login; everyone else's cursor starts at the conversation's end.
-- Rows that are not valid chats stay in OfflineMessage.

CREATE TABLE IF NOT EXISTS Message (
    conv   INTEGER NOT NULL,
    cseq   INTEGER NOT NULL,
    mid    INTEGER NOT NULL DEFAULT 0,
    sender INTEGER NOT NULL,
    ts     INTEGER NOT NULL,
    body   TEXT NOT NULL,
    PRIMARY KEY (conv, cseq)
);

CREATE INDEX IF NOT EXISTS Message_ts ON Message (ts);

CREATE TABLE IF NOT EXISTS Conversation (
    conv      INTEGER PRIMARY KEY,
    last_cseq INTEGER NOT NULL DEFAULT 0,
    last_ts   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS ConvCursor (
    userid         INTEGER NOT NULL,
    conv           INTEGER NOT NULL,
    delivered_cseq INTEGER NOT NULL DEFAULT 0,
    read_cseq      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (userid, conv)
) WITHOUT ROWID;

-- The queue, with the conversation, sender and time of each chat.
CREATE TEMP TABLE migrate_queue AS
SELECT id, userid, message, sender, mid,
       coalesce(ts, CAST(strftime('%s', tm) AS INTEGER) * 1000, 0) AS ts,
       CASE WHEN msgid = 5 AND sender > 0 AND toid > 0 AND sender <> toid
                THEN (min(sender, toid) << 32) | max(sender, toid)
            WHEN msgid = 9 AND sender > 0 AND groupid > 0 THEN -groupid
       END AS conv
FROM (SELECT o.id, o.userid, o.message,
             json_extract(j, '$.msgid') AS msgid,
             json_extract(j, '$.id') AS sender,
             json_extract(j, '$.toid') AS toid,
             json_extract(j, '$.groupid') AS groupid,
             coalesce(json_extract(j, '$.mid'), 0) AS mid,
             json_extract(j, '$.ts') AS ts,
             json_extract(j, '$.time') AS tm
      FROM (SELECT id, userid, message,
                   CASE WHEN json_valid(message) THEN message END AS j
            FROM OfflineMessage) AS o);

DELETE FROM migrate_queue WHERE conv IS NULL;

-- One log message per chat, numbered in queue order.
CREATE TEMP TABLE migrate_log AS
SELECT conv, first_id, message, sender, mid, ts,
       row_number() OVER (PARTITION BY conv ORDER BY first_id) AS cseq
FROM (SELECT conv, min(id) AS first_id, message, sender, mid, ts
      FROM migrate_queue WHERE conv < 0 GROUP BY conv, message
      UNION ALL
      SELECT conv, id, message, sender, mid, ts FROM migrate_queue WHERE conv > 0);

INSERT OR IGNORE INTO Message (conv, cseq, mid, sender, ts, body)
SELECT conv, cseq, mid, sender, ts, message FROM migrate_log;

INSERT OR IGNORE INTO Conversation (conv, last_cseq, last_ts)
SELECT conv, max(cseq), max(ts) FROM migrate_log GROUP BY conv;

-- Recipients: just below their first queued message of each conversation.
INSERT OR IGNORE INTO ConvCursor (userid, conv, delivered_cseq, read_cseq)
SELECT q.userid, q.conv, min(l.cseq) - 1, min(l.cseq) - 1
FROM migrate_queue q
JOIN migrate_log l ON l.conv = q.conv
     AND (l.first_id = q.id OR (q.conv < 0 AND l.message = q.message))
GROUP BY q.userid, q.conv;

-- Everyone else: both users of a pair, every member of a group, at the end.
INSERT OR IGNORE INTO ConvCursor (userid, conv, delivered_cseq, read_cseq)
SELECT conv >> 32, conv, last_cseq, last_cseq FROM Conversation WHERE conv > 0;

INSERT OR IGNORE INTO ConvCursor (userid, conv, delivered_cseq, read_cseq)
SELECT conv & 4294967295, conv, last_cseq, last_cseq FROM Conversation WHERE conv > 0;

INSERT OR IGNORE INTO ConvCursor (userid, conv, delivered_cseq, read_cseq)
SELECT m.userid, -m.groupid, coalesce(c.last_cseq, 0), coalesce(c.last_cseq, 0)
FROM GroupUser m LEFT JOIN Conversation c ON c.conv = -m.groupid;

DELETE FROM OfflineMessage WHERE id IN (SELECT id FROM migrate_queue);

DROP TABLE migrate_log;
DROP TABLE migrate_queue;
