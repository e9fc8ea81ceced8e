"""Forensics bundles: one tar.gz that captures a (frozen) container for later analysis.

The caller freezes the container first (enforcement does), so processes, sockets and
files hold still while they are read. Members, all under one top folder:

  manifest.json      container, time, host, Stockade version, and the sha256 and size of
                     every other member (the bundle's own sha256 is returned to the caller)
  inspect.json       `docker inspect`
  processes.json     every process: pid/ppid, argv, exe and its sha256, cwd, uid, fds
  process_tree.json  the same as a tree
  sockets.json       TCP/UDP sockets of each network namespace (/proc/<pid>/net/tcp*),
                     with the pids and fds that own them
  changes.json       `docker diff`, each added/changed file with kind, size, sha256, and
                     whether its content is in the bundle
  files/<path>       the changed files themselves, up to the caps in safe_reads (of a
                     stopped container: fetched through Docker's archive API instead)
  alerts.json        the container's recent incidents; audit.json the actions taken on it
  blocks.json, profile.json (when present), logs.txt (the log tail), summary.txt

Reading the container's files never leaves its root: the parent directory is opened with
openat2(RESOLVE_IN_ROOT) on /proc/<pid>/root, the last component without following a
symlink (a link planted as /tmp/x -> /etc/shadow is recorded as a link, not read through).
Only regular files are archived, as mode 0600 members with safe names.

Modules, one job each:
  capture     gathering the evidence (processes, sockets, Docker inspect/diff/logs, what
              other layers know) and `Forensics`, which is given exactly the ports it reads
  safe_reads  reads of the changed files inside the container root, and member names
  bundle      the tar.gz: members, manifest, where it is created; `ForensicsError`
"""

from .bundle import BundleResult, ForensicsError, bundle_name, open_default, open_for_peer, write_bundle
from .capture import (
    Evidence,
    Forensics,
    ProfileViews,
    audit_of,
    gather_processes,
    incidents_of,
    profile_of,
)
from .safe_reads import gather_changes, gather_changes_archived, member_path, read_changed_file

__all__ = [
    "BundleResult", "Evidence", "Forensics", "ForensicsError", "ProfileViews", "audit_of",
    "bundle_name", "gather_changes", "gather_changes_archived", "gather_processes", "incidents_of",
    "member_path", "open_default", "open_for_peer", "profile_of", "read_changed_file",
    "write_bundle",
]
