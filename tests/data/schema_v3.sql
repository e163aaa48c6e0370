BEGIN TRANSACTION;
CREATE TABLE counts (
        queue TEXT    NOT NULL,
        state TEXT    NOT NULL,
        n     INTEGER NOT NULL,
        PRIMARY KEY (queue, state)
    ) WITHOUT ROWID
    ;
INSERT INTO "counts" VALUES('default','cancelled',1);
INSERT INTO "counts" VALUES('default','dead',0);
INSERT INTO "counts" VALUES('default','queued',1);
INSERT INTO "counts" VALUES('default','running',0);
INSERT INTO "counts" VALUES('default','succeeded',1);
INSERT INTO "counts" VALUES('mail','dead',1);
INSERT INTO "counts" VALUES('mail','queued',1);
INSERT INTO "counts" VALUES('mail','running',1);
CREATE TABLE events (
        seq     INTEGER PRIMARY KEY,
        job_id  INTEGER NOT NULL,
        kind    TEXT    NOT NULL,
        at      REAL    NOT NULL,
        attempt INTEGER NOT NULL,
        error   TEXT,
        prev    INTEGER
    );
INSERT INTO "events" VALUES(3,3,'enqueued',0.0,0,NULL,NULL);
INSERT INTO "events" VALUES(4,4,'enqueued',0.0,0,NULL,NULL);
INSERT INTO "events" VALUES(5,5,'enqueued',0.0,0,NULL,NULL);
INSERT INTO "events" VALUES(8,3,'started',1.0,1,NULL,3);
INSERT INTO "events" VALUES(9,4,'started',1.0,1,NULL,4);
INSERT INTO "events" VALUES(12,3,'retried',2.0,1,'boom',8);
INSERT INTO "events" VALUES(13,4,'dead',2.0,1,'fatal',9);
INSERT INTO "events" VALUES(14,4,'requeued',4.0,0,NULL,13);
INSERT INTO "events" VALUES(15,3,'started',5.0,2,NULL,12);
INSERT INTO "events" VALUES(16,3,'succeeded',5.5,2,NULL,15);
INSERT INTO "events" VALUES(17,6,'enqueued',6.0,0,NULL,NULL);
INSERT INTO "events" VALUES(18,6,'cancelled',7.0,0,NULL,17);
INSERT INTO "events" VALUES(19,7,'enqueued',8.0,0,NULL,NULL);
INSERT INTO "events" VALUES(20,8,'enqueued',8.5,0,NULL,NULL);
INSERT INTO "events" VALUES(21,5,'started',8.0,1,NULL,5);
INSERT INTO "events" VALUES(22,5,'dead',9.0,1,'gone',21);
INSERT INTO "events" VALUES(23,7,'started',9.0,1,NULL,19);
CREATE TABLE jobs (
        id           INTEGER PRIMARY KEY,
        task         TEXT    NOT NULL,
        queue        TEXT    NOT NULL,
        payload      TEXT    NOT NULL,
        state        TEXT    NOT NULL CHECK (
                         state = 'queued' OR state = 'running' OR state = 'succeeded'
                         OR state = 'dead' OR state = 'cancelled'),
        attempts     INTEGER NOT NULL,
        max_attempts INTEGER NOT NULL,
        priority     INTEGER NOT NULL,
        run_at       REAL    NOT NULL,
        created_at   REAL    NOT NULL,
        updated_at   REAL    NOT NULL,
        lease_until  REAL,
        unique_key   TEXT,
        last_error   TEXT,
        result       TEXT,
        event        TEXT    NOT NULL,
        last_seq     INTEGER,
        retry_delay  REAL
    );
INSERT INTO "jobs" VALUES(3,'a','default','{"n":2}','succeeded',2,3,0,3.0,0.0,5.5,NULL,NULL,'boom','[1,2]','succeeded',16,2.0);
INSERT INTO "jobs" VALUES(4,'a','default','{"n":3}','queued',0,3,0,4.0,0.0,4.0,NULL,NULL,'fatal',NULL,'requeued',14,NULL);
INSERT INTO "jobs" VALUES(5,'b','mail','{}','dead',1,1,0,0.0,0.0,9.0,NULL,'k','gone',NULL,'dead',22,NULL);
INSERT INTO "jobs" VALUES(6,'c','default','{}','cancelled',0,1,0,6.0,6.0,7.0,NULL,NULL,NULL,NULL,'cancelled',18,NULL);
INSERT INTO "jobs" VALUES(7,'d','mail','{}','running',1,1,0,8.0,8.0,9.0,14.0,NULL,NULL,NULL,'started',23,NULL);
INSERT INTO "jobs" VALUES(8,'e','mail','{}','queued',0,1,0,8.5,8.5,8.5,NULL,NULL,NULL,NULL,'enqueued',20,NULL);
CREATE TABLE purged (
        task   TEXT    NOT NULL,
        queue  TEXT    NOT NULL,
        series TEXT    NOT NULL,
        key    INTEGER NOT NULL,
        n      INTEGER NOT NULL,
        total  REAL    NOT NULL,
        PRIMARY KEY (task, queue, series, key)
    ) WITHOUT ROWID
;
INSERT INTO "purged" VALUES('','','version',0,1,0.0);
INSERT INTO "purged" VALUES('a','default','attempts',1,2,2.0);
INSERT INTO "purged" VALUES('a','default','duration:succeeded',7,2,2.0);
INSERT INTO "purged" VALUES('a','default','enqueued',0,2,0.0);
INSERT INTO "purged" VALUES('a','default','started',0,2,0.0);
INSERT INTO "purged" VALUES('a','default','succeeded',0,2,0.0);
CREATE TABLE schedules (
        name         TEXT    PRIMARY KEY,
        task         TEXT    NOT NULL,
        payload      TEXT    NOT NULL,
        queue        TEXT    NOT NULL,
        priority     INTEGER NOT NULL,
        max_attempts INTEGER NOT NULL,
        every        REAL,
        cron         TEXT,
        tz           TEXT    NOT NULL,
        misfire      TEXT    NOT NULL CHECK (misfire IN ('burst', 'delay', 'skip')),
        max_burst    INTEGER NOT NULL,
        start        REAL,
        anchor       REAL    NOT NULL,
        next_slot    REAL    NOT NULL,
        last_slot    REAL,
        created_at   REAL    NOT NULL,
        updated_at   REAL    NOT NULL,
        CHECK ((every IS NULL) <> (cron IS NULL))
    ) WITHOUT ROWID
    ;
CREATE INDEX jobs_claim ON jobs (queue, priority DESC, run_at)
        WHERE state = 'queued'
    ;
CREATE INDEX jobs_lease ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_dead ON jobs (queue) WHERE state = 'dead';
CREATE UNIQUE INDEX jobs_unique ON jobs (unique_key)
        WHERE unique_key IS NOT NULL AND (state = 'queued' OR state = 'running')
    ;
CREATE TRIGGER jobs_enqueued AFTER INSERT ON jobs BEGIN
        INSERT INTO events (seq, job_id, kind, at, attempt)
            VALUES (NEW.last_seq, NEW.id, NEW.event, NEW.created_at, NEW.attempts);
        UPDATE jobs SET last_seq = last_insert_rowid()
            WHERE id = NEW.id AND NEW.last_seq IS NULL;
        INSERT INTO counts (queue, state, n) VALUES (NEW.queue, NEW.state, 1)
            ON CONFLICT (queue, state) DO UPDATE SET n = n + 1;
    END;
CREATE TRIGGER jobs_transition AFTER UPDATE OF event ON jobs BEGIN
        INSERT INTO events (job_id, kind, at, attempt, error, prev) VALUES (
            NEW.id, NEW.event, NEW.updated_at,
            CASE NEW.event WHEN 'released' THEN OLD.attempts ELSE NEW.attempts END,
            CASE NEW.event WHEN 'retried' THEN NEW.last_error
                WHEN 'expired' THEN NEW.last_error WHEN 'dead' THEN NEW.last_error END,
            OLD.last_seq
        );
        UPDATE jobs SET last_seq = last_insert_rowid() WHERE id = NEW.id;
        INSERT INTO counts (queue, state, n)
            VALUES (OLD.queue, OLD.state, -1), (NEW.queue, NEW.state, 1)
            ON CONFLICT (queue, state) DO UPDATE SET n = n + excluded.n;
    END;
CREATE INDEX schedules_next ON schedules (next_slot);
COMMIT;
PRAGMA application_id = 1246708299;
PRAGMA user_version = 3;
