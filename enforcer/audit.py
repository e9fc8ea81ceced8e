"""The audit trail: every action, asked over the socket or taken by the enforcer itself,
is written to the audit log and announced on the `audit` topic."""

from __future__ import annotations

from typing import Any

from .ports import Publish
from .server.peers import Peer
from .store.audit import AuditRepo


# Arguments whose values are secrets (an output's HTTP headers carry tokens): the audit log,
# which viewers read, keeps their names only.
SECRET_ARGS = ("headers",)


def redacted(args: dict[str, Any]) -> dict[str, Any]:
    if not any(k in args for k in SECRET_ARGS):
        return args
    out = dict(args)
    for k in SECRET_ARGS:
        v = out.get(k)
        if isinstance(v, dict):
            out[k] = {str(name): "<redacted>" for name in v}
        elif v is not None:
            out[k] = "<redacted>"
    return out


class Audit:
    def __init__(self, repo: AuditRepo, publish: Publish) -> None:
        self.repo = repo
        self.publish = publish

    async def record(self, uid: int, user: str, op: str, target: str, args: dict[str, Any], result: str) -> None:
        entry = await self.repo.record(uid, user, op, target, args, result)
        self.publish("audit", entry.to_dict())

    async def record_request(self, peer: Peer, op: str, target: str, args: dict[str, Any], result: str) -> None:
        """The server's auditor: a mutating op, as the peer asked it."""
        await self.record(peer.uid, peer.user, op, target, redacted(args), result)
