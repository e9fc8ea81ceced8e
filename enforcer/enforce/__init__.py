"""Enforcement: nftables blocks, cgroup freezes, process kills, forensics, seccomp and
hardening exports, and the protect-mode response (`component.Enforcement`).

Kept import-light: the CLI imports `enforce.blocks` (peer parsing) without the daemon.
"""
