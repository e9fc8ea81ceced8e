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
]

LATEST_VERSION = MIGRATIONS[-1][0]
