"""Enforcement: nftables blocks, cgroup freezes, process kills, forensics, seccomp and
hardening exports, and the protect-mode response (`component.Enforcement`).

The peer parsing the CLI also does lives in `enforcer.models`: the console imports nothing
of the enforcer but the data model and the protocol.
"""
