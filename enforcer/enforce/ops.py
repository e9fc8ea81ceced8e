"""Socket ops of enforcement (docs/protocol.md, "Enforcement and forensics"): argument
checks here, the actions in component.Enforcement. Mutating ops are audited by the server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..server import OpError, Request
from . import freezer as fz
from .blocks import BadPeer, as_network, split_peer_port

if TYPE_CHECKING:
    from .component import Enforcement


def _text(args: dict[str, Any], name: str, required: bool = True, limit: int = 256) -> str:
    value = args.get(name)
    if value in (None, "") and not required:
        return ""
    if not isinstance(value, str) or not value or len(value) > limit:
        raise OpError(f"{name} must be a non-empty string of at most {limit} characters", "bad_request")
    return value


def _int(args: dict[str, Any], name: str, hi: int = 2**62) -> int:
    value = args.get(name)
    if isinstance(value, str) and value.isdigit() and len(value) < 20:
        value = int(value)
    # Bounded: a pid is a C int, an id an SQLite integer; larger ones overflow deep inside.
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= hi:
        raise OpError(f"{name} must be a positive whole number", "bad_request")
    return value


def register(e: "Enforcement", server: Any) -> None:
    enforcer = e.enforcer

    async def op_block(req: Request) -> dict[str, Any]:
        c = enforcer.container_or_error(req.args.get("target"))
        proto = req.args.get("proto")
        proto = "any" if proto in (None, "") else proto  # a wrong type ({}, 0, []) is an error, not "any"
        peer, kind, port = e.parse_peer(c, req.args.get("peer"), req.args.get("port"))
        reason = _text(req.args, "reason", required=False, limit=500)
        row, created = await e.add_block(c, peer, kind, port, proto, reason=reason or f"by {req.peer.user}")
        return {**e.block_view(row), "created_now": created}

    async def op_unblock(req: Request) -> dict[str, Any]:
        if req.args.get("block_id") is not None:
            block_id = _int(req.args, "block_id")
            rows = [b for b in e.blocks.values() if b.id == block_id]
            if not rows:
                raise OpError(f"no block {block_id}", "not_found")
            return {"removed": await e.remove_blocks(rows)}
        target = _text(req.args, "target")
        c = enforcer.inventory.resolve(target)
        name = c.name if c is not None else target  # a block of a container that is gone
        peer_text = _text(req.args, "peer")
        try:
            text, embedded = split_peer_port(peer_text)
        except BadPeer as err:
            raise OpError(str(err), "bad_request") from None
        port = req.args.get("port")
        port_n = embedded or (port if isinstance(port, int) and not isinstance(port, bool) else
                              int(port) if isinstance(port, str) and port.isdigit() else 0)
        net = as_network(text)
        if net is not None:
            peer = str(net)
        else:
            other = enforcer.inventory.resolve(text)
            peer = other.name if other is not None else text
        proto = req.args.get("proto")
        rows = [b for b in e.blocks_of(name) if b.peer == peer and (not port_n or b.port == port_n)
                and (not proto or b.proto == proto)]
        if not rows:
            what = f" port {port_n}" if port_n else ""
            raise OpError(f"no block of {name} from {peer}{what}", "not_found")
        return {"removed": await e.remove_blocks(rows)}

    async def op_blocks(req: Request) -> list[dict[str, Any]]:
        target = req.args.get("target")
        rows = sorted(e.blocks.values(), key=lambda b: b.id)
        if target:
            if not isinstance(target, str):
                raise OpError("target must be a container", "bad_request")
            c = enforcer.inventory.resolve(target)
            name = c.name if c is not None else target
            rows = [b for b in rows if b.container_name == name]
        return [e.block_view(b) for b in rows]

    async def op_freeze(req: Request) -> dict[str, Any]:
        c = enforcer.container_or_error(req.args.get("target"))
        return await e.freeze(c, reason=f"by {req.peer.user}")

    async def op_unfreeze(req: Request) -> dict[str, Any]:
        c = enforcer.container_or_error(req.args.get("target"))
        return await e.unfreeze(c)

    async def op_kill(req: Request) -> dict[str, Any]:
        c = enforcer.container_or_error(req.args.get("target"))
        return await e.kill(c, _int(req.args, "pid", hi=2**31 - 1), req.args.get("signal"))

    async def op_forensics(req: Request) -> dict[str, Any]:
        from .forensics import ForensicsError
        from .component import peer_groups

        c = enforcer.container_or_error(req.args.get("target"))
        out = _text(req.args, "out", required=False, limit=4096) or None
        frozen = False
        state = ""
        if c.state in ("running", "paused"):
            state = (await e.freeze(c, reason="forensics"))["state"]
            frozen = state == fz.FROZEN
        try:
            result = await e.forensics.capture(
                c, out=out, uid=req.peer.uid, gid=req.peer.gid,
                groups=lambda: peer_groups(req.peer.uid, req.peer.gid), freezer_state=state,
                blocks=[e.block_view(b) for b in e.blocks_of(c.name)])
        except ForensicsError as err:
            raise OpError(str(err), err.code) from None
        return {**result.to_dict(), "container": c.name, "frozen": frozen}

    async def op_seccomp(req: Request) -> dict[str, Any]:
        from .exports import seccomp_for_container

        c = enforcer.container_or_error(req.args.get("target"))
        return seccomp_for_container(enforcer, c)

    async def op_harden(req: Request) -> dict[str, Any]:
        from .exports import harden_app

        # On the loop, not a thread: it reads (and may attach) profiles, which are loop-only.
        return await harden_app(enforcer, _text(req.args, "target"))

    server.register("block", op_block, mutates=True)
    server.register("unblock", op_unblock, mutates=True)
    server.register("blocks", op_blocks)
    server.register("freeze", op_freeze, mutates=True)
    server.register("unfreeze", op_unfreeze, mutates=True)
    server.register("kill", op_kill, mutates=True)
    server.register("forensics", op_forensics, mutates=True)
    server.register("seccomp", op_seccomp)
    server.register("harden", op_harden)
