"""Ops of enforcement (docs/protocol.md, "Enforcement and forensics"): block, unblock,
blocks, freeze, unfreeze, kill, forensics, seccomp and harden. Arguments are checked
here, the actions are the responder's. Mutating ops are audited by the server."""

from __future__ import annotations

import os
import pwd
from typing import Any

from ..enforce import freezer as fz
from ..enforce.blocks import as_network
from ..models import BadPeer, split_peer_port
from ..enforce.exports import harden_app, seccomp_for_container
from ..enforce.responder import Responder
from ..enforce.forensics import Forensics, ForensicsError
from ..inventory import Inventory
from ..ports import DockerCalls
from ..profiles.book import ProfileBook
from ..server import OpError, Request, Server
from . import args


def register(server: Server, responder: Responder, forensics: Forensics, inventory: Inventory) -> None:
    e = responder

    async def op_block(req: Request) -> dict[str, Any]:
        c = args.container(inventory, req.args.get("target"))
        proto = req.args.get("proto")
        proto = "any" if proto in (None, "") else proto  # a wrong type ({}, 0, []) is an error, not "any"
        peer, kind, port = e.parse_peer(c, req.args.get("peer"), req.args.get("port"))
        reason = args.text(req.args, "reason", required=False, limit=500)
        row, created = await e.add_block(c, peer, kind, port, proto, reason=reason or f"by {req.peer.user}")
        return {**e.block_view(row), "created_now": created}

    async def op_unblock(req: Request) -> dict[str, Any]:
        if req.args.get("block_id") is not None:
            block_id = args.whole(req.args, "block_id", digits=True)
            rows = [b for b in e.blocks.values() if b.id == block_id]
            if not rows:
                raise OpError(f"no block {block_id}", args.NOT_FOUND)
            return {"removed": await e.remove_blocks(rows)}
        target = args.text(req.args, "target")
        c = inventory.resolve(target)
        name = c.name if c is not None else target  # a block of a container that is gone
        peer_text = args.text(req.args, "peer")
        try:
            text, embedded = split_peer_port(peer_text)
        except BadPeer as err:
            raise args.bad(str(err)) from None
        port = req.args.get("port")
        port_n = embedded or (port if isinstance(port, int) and not isinstance(port, bool) else
                              int(port) if isinstance(port, str) and port.isdigit() else 0)
        net = as_network(text)
        if net is not None:
            peer = str(net)
        else:
            other = inventory.resolve(text)
            peer = other.name if other is not None else text
        proto = req.args.get("proto")
        rows = [b for b in e.blocks_of(name) if b.peer == peer and (not port_n or b.port == port_n)
                and (not proto or b.proto == proto)]
        if not rows:
            what = f" port {port_n}" if port_n else ""
            raise OpError(f"no block of {name} from {peer}{what}", args.NOT_FOUND)
        return {"removed": await e.remove_blocks(rows)}

    async def op_blocks(req: Request) -> list[dict[str, Any]]:
        target = req.args.get("target")
        rows = sorted(e.blocks.values(), key=lambda b: b.id)
        if target:
            if not isinstance(target, str):
                raise args.bad("target must be a container")
            c = inventory.resolve(target)
            name = c.name if c is not None else target
            rows = [b for b in rows if b.container_name == name]
        return [e.block_view(b) for b in rows]

    async def op_freeze(req: Request) -> dict[str, Any]:
        c = args.container(inventory, req.args.get("target"))
        return await e.freeze(c, reason=f"by {req.peer.user}")

    async def op_unfreeze(req: Request) -> dict[str, Any]:
        c = args.container(inventory, req.args.get("target"))
        return await e.unfreeze(c)

    async def op_kill(req: Request) -> dict[str, Any]:
        c = args.container(inventory, req.args.get("target"))
        return await e.kill(c, args.whole(req.args, "pid", hi=2**31 - 1, digits=True), req.args.get("signal"))

    async def op_forensics(req: Request) -> dict[str, Any]:
        c = args.container(inventory, req.args.get("target"))
        out = args.text(req.args, "out", required=False, limit=4096) or None
        frozen = False
        state = ""
        if c.state in ("running", "paused"):
            state = (await e.freeze(c, reason="forensics"))["state"]
            frozen = state == fz.FROZEN
        try:
            result = await forensics.capture(
                c, out=out, uid=req.peer.uid, gid=req.peer.gid,
                groups=lambda: peer_groups(req.peer.uid, req.peer.gid), freezer_state=state,
                blocks=[e.block_view(b) for b in e.blocks_of(c.name)])
        except ForensicsError as err:
            raise OpError(str(err), err.code) from None
        return {**result.to_dict(), "container": c.name, "frozen": frozen}

    server.register("block", op_block, mutates=True)
    server.register("unblock", op_unblock, mutates=True)
    server.register("blocks", op_blocks)
    server.register("freeze", op_freeze, mutates=True)
    server.register("unfreeze", op_unfreeze, mutates=True)
    server.register("kill", op_kill, mutates=True)
    server.register("forensics", op_forensics, mutates=True)


def register_exports(server: Server, book: ProfileBook, inventory: Inventory, docker: DockerCalls,
                     seccomp_dir: str) -> None:
    """seccomp and harden: what the learned profiles become for Docker and compose."""

    async def op_seccomp(req: Request) -> dict[str, Any]:
        return seccomp_for_container(book, args.container(inventory, req.args.get("target")))

    async def op_harden(req: Request) -> dict[str, Any]:
        # On the loop, not a thread: it reads (and may attach) profiles, which are loop-only.
        return await harden_app(book, inventory, docker, seccomp_dir, args.text(req.args, "target"))

    server.register("seccomp", op_seccomp)
    # harden writes seccomp files as root: an admin's act, and audited.
    server.register("harden", op_harden, mutates=True)


def peer_groups(uid: int, gid: int) -> set[int]:
    """The groups of a socket peer (for creating a bundle where they asked)."""
    try:
        return {gid, *os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)}
    except KeyError:
        return {gid}
