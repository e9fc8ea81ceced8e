"""Enforcement: nftables blocks, cgroup freezes, process kills, forensics, seccomp and
hardening exports, and the protect-mode response (`responder.Responder`).
The pure cores (blocks, ruleset, seccomp, harden) import nothing of the daemon.
"""
