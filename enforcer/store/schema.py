"""Versioned schema migrations, applied in order at start (PRAGMA user_version).

Append a new (version, statements) pair for every change; never edit a migration
that has shipped. Each migration runs in one transaction.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        -- Inventory: the last snapshot of every container seen, so that state tied to a
        -- container (blocks, freezes, alerts) can be shown and reconciled after it is gone.
        CREATE TABLE containers (
            id          TEXT PRIMARY KEY,
            name        TEXT NOT NULL,
            app         TEXT NOT NULL,
            service     TEXT NOT NULL,
            image       TEXT NOT NULL,
            image_id    TEXT NOT NULL DEFAULT '',
            state       TEXT NOT NULL DEFAULT '',
            first_seen  REAL NOT NULL,
            last_seen   REAL NOT NULL,
            removed_at  REAL,
            data        TEXT NOT NULL  -- JSON of models.Container
        );
        CREATE INDEX containers_app ON containers(app, service);

        -- Per-app settings. A row exists once an app was seen or configured.
        CREATE TABLE apps (
            name          TEXT PRIMARY KEY,
            mode          TEXT NOT NULL DEFAULT 'alert'
                          CHECK (mode IN ('learn', 'alert', 'protect')),
            learn_seconds REAL,          -- NULL: the enforcer's default
            mode_set      INTEGER NOT NULL DEFAULT 0,  -- 1 once chosen by a person
            first_seen    REAL NOT NULL
        );

        -- Per-container mode overrides, keyed by name (compose recreates containers
        -- with new ids but the same name).
        CREATE TABLE container_modes (
            container_name TEXT PRIMARY KEY,
            mode           TEXT NOT NULL CHECK (mode IN ('learn', 'alert', 'protect')),
            set_at         REAL NOT NULL
        );

        -- Every action that changes state: who, what, when, result.
        CREATE TABLE audit (
            id      INTEGER PRIMARY KEY AUTOINCREMENT,
            time    REAL NOT NULL,
            uid     INTEGER NOT NULL,
            user    TEXT NOT NULL,
            action  TEXT NOT NULL,
            target  TEXT NOT NULL DEFAULT '',
            args    TEXT NOT NULL DEFAULT '{}',
            result  TEXT NOT NULL DEFAULT 'ok'
        );
        """,
    ),
    (
        2,
        """
        -- Profiles, keyed by (app, service, image digest): replicas share one.
        CREATE TABLE profiles (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,
            app           TEXT NOT NULL,
            service       TEXT NOT NULL,
            image_digest  TEXT NOT NULL,
            state         TEXT NOT NULL DEFAULT 'learning'
                          CHECK (state IN ('learning', 'active')),
            created       REAL NOT NULL,
            learn_until   REAL NOT NULL,
            activated     REAL,
            UNIQUE (app, service, image_digest)
        );

        -- One row per allowed thing. kind: process | listener | peer | file | syscall.
        -- key is the canonical text of the entry (e.g. "/bin/wget sha256:..", "tcp/80").
        CREATE TABLE profile_entries (
            profile_id  INTEGER NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
            kind        TEXT NOT NULL,
            key         TEXT NOT NULL,
            data        TEXT NOT NULL DEFAULT '{}',
            source      TEXT NOT NULL DEFAULT 'learned',  -- seed | learned
            first_seen  REAL NOT NULL,
            PRIMARY KEY (profile_id, kind, key)
        ) WITHOUT ROWID;

        -- Incidents: repeats of one (container, kind, subject) fold into one row.
        CREATE TABLE alerts (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,
            fold_key      TEXT NOT NULL,
            first_seen    REAL NOT NULL,
            last_seen     REAL NOT NULL,
            count         INTEGER NOT NULL DEFAULT 1,
            host          TEXT NOT NULL,
            app           TEXT NOT NULL,
            service       TEXT NOT NULL,
            container     TEXT NOT NULL,
            container_id  TEXT NOT NULL,
            image         TEXT NOT NULL,
            kind          TEXT NOT NULL,
            severity      TEXT NOT NULL,
            summary       TEXT NOT NULL,
            detail        TEXT NOT NULL DEFAULT '{}',
            action        TEXT NOT NULL DEFAULT 'alerted',
            subject       TEXT NOT NULL DEFAULT '',
            rule          TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX alerts_fold ON alerts(fold_key, last_seen);
        CREATE INDEX alerts_container ON alerts(container_id);
        """,
    ),
    (
        3,
        """
        -- Threat feeds: the registry and each feed's last sync.
        CREATE TABLE feeds (
            name          TEXT PRIMARY KEY,
            url           TEXT NOT NULL,
            format        TEXT NOT NULL,
            enabled       INTEGER NOT NULL DEFAULT 1,
            local         INTEGER NOT NULL DEFAULT 0,  -- 1: private ranges are kept
            interval      REAL NOT NULL DEFAULT 3600,
            columns       TEXT NOT NULL DEFAULT '{}',  -- csv: JSON indicator type -> column
            max_bytes     INTEGER NOT NULL DEFAULT 0,  -- 0: the enforcer's default cap
            source        TEXT NOT NULL DEFAULT 'user',  -- user | catalogue | config
            configured    INTEGER NOT NULL DEFAULT 0,  -- 1: a [feeds.NAME] config table set it
            description   TEXT NOT NULL DEFAULT '',
            created       REAL NOT NULL,
            last_sync     REAL,
            last_attempt  REAL,
            status        TEXT NOT NULL DEFAULT 'never',
            etag          TEXT NOT NULL DEFAULT '',
            last_modified TEXT NOT NULL DEFAULT '',
            entries       INTEGER NOT NULL DEFAULT 0,
            rejected      INTEGER NOT NULL DEFAULT 0,
            dropped       INTEGER NOT NULL DEFAULT 0,
            error         TEXT NOT NULL DEFAULT '',
            hits          INTEGER NOT NULL DEFAULT 0
        );

        -- The last good body of each feed (zlib), loaded at start: a failed download or a
        -- restart never leaves a feed empty.
        CREATE TABLE feed_bodies (
            name     TEXT PRIMARY KEY REFERENCES feeds(name) ON DELETE CASCADE,
            body     BLOB NOT NULL,
            size     INTEGER NOT NULL,
            fetched  REAL NOT NULL
        );

        -- Observed values found on a feed.
        CREATE TABLE feed_hits (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,
            time          REAL NOT NULL,
            feed          TEXT NOT NULL,
            indicator     TEXT NOT NULL,
            type          TEXT NOT NULL,
            matched       TEXT NOT NULL,
            container     TEXT NOT NULL DEFAULT '',
            container_id  TEXT NOT NULL DEFAULT '',
            alert_id      INTEGER
        );
        CREATE INDEX feed_hits_feed ON feed_hits(feed, time);
        """,
    ),
    (
        4,
        """
        -- Network blocks: a container cut off from a peer (another container, by name, or
        -- an address/CIDR), optionally one port. Keyed by container name like modes, so a
        -- block holds when compose recreates the container. port 0: every port.
        CREATE TABLE blocks (
            id              INTEGER PRIMARY KEY AUTOINCREMENT,
            container_name  TEXT NOT NULL,
            container_id    TEXT NOT NULL DEFAULT '',
            peer            TEXT NOT NULL,  -- a container name, or a network in CIDR form
            peer_kind       TEXT NOT NULL CHECK (peer_kind IN ('container', 'network')),
            port            INTEGER NOT NULL DEFAULT 0,
            proto           TEXT NOT NULL DEFAULT 'any' CHECK (proto IN ('tcp', 'udp', 'any')),
            created         REAL NOT NULL,
            reason          TEXT NOT NULL DEFAULT '',
            source          TEXT NOT NULL DEFAULT 'manual',  -- manual | protect
            alert_id        INTEGER,
            UNIQUE (container_name, peer, port, proto)
        );

        -- Containers Stockade froze (cgroup freezer), so a restarted enforcer keeps them frozen.
        CREATE TABLE freezes (
            container_id    TEXT PRIMARY KEY,
            container_name  TEXT NOT NULL,
            frozen_at       REAL NOT NULL,
            backend         TEXT NOT NULL DEFAULT '',  -- v1 | v2
            reason          TEXT NOT NULL DEFAULT ''
        );
        """,
    ),
    (
        5,
        """
        -- Alerts: what protect mode would have done (learn and alert modes), ATT&CK techniques,
        -- resolution.
        ALTER TABLE alerts ADD COLUMN would TEXT;
        ALTER TABLE alerts ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
        -- An incident accepted into its profile (stockade allow): who and when.
        ALTER TABLE alerts ADD COLUMN resolved TEXT NOT NULL DEFAULT '';
        ALTER TABLE alerts ADD COLUMN lineage TEXT;  -- JSON {"pid", "path", "start"} or NULL
        -- Why a profile may be incomplete (JSON list of reasons), and when learning last
        -- added an entry (learning ends once the profile has been stable).
        ALTER TABLE profiles ADD COLUMN gaps TEXT NOT NULL DEFAULT '[]';
        ALTER TABLE profiles ADD COLUMN last_change REAL NOT NULL DEFAULT 0;
        """,
    ),
    (
        6,
        """
        -- Alert outputs (docs/outputs.md): where incidents are sent and in which format.
        CREATE TABLE outputs (
            name          TEXT PRIMARY KEY,
            url           TEXT NOT NULL,
            format        TEXT NOT NULL CHECK (format IN ('json', 'falco', 'ocsf')),
            min_severity  TEXT NOT NULL DEFAULT 'low',
            headers       TEXT NOT NULL DEFAULT '{}',  -- JSON name -> value (http only)
            created       REAL NOT NULL,
            delivered     INTEGER NOT NULL DEFAULT 0,
            dropped       INTEGER NOT NULL DEFAULT 0   -- outbox rows dropped (oldest first) when full
        );

        -- The outbox: one row per (output, incident publication) not yet delivered. A row is
        -- deleted once its receiver took it, so a restart sends what is left (at least once).
        CREATE TABLE outbox (
            id      INTEGER PRIMARY KEY AUTOINCREMENT,
            output  TEXT NOT NULL REFERENCES outputs(name) ON DELETE CASCADE,
            queued  REAL NOT NULL,
            alert   TEXT NOT NULL  -- JSON of the incident as published
        );
        CREATE INDEX outbox_output ON outbox(output, id);
        """,
    ),
    (
        7,
        """
        -- A seeded entry (compose file, image config) seen in use while its profile learned:
        -- 0 = seeded, never used (stockade profile prune removes those). Entries stored
        -- before this version count as used: their use was never recorded, so none is
        -- claimed unused.
        ALTER TABLE profile_entries ADD COLUMN used INTEGER NOT NULL DEFAULT 1;
        """,
    ),
    (
        8,
        """
        -- An http output's total deadline for one POST, in seconds (docs/outputs.md); NULL:
        -- the enforcer's default (outputs/targets.py HTTP_DEADLINE).
        ALTER TABLE outputs ADD COLUMN deadline REAL;
        """,
    ),
]

LATEST_VERSION = MIGRATIONS[-1][0]
