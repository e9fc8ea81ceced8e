"""The default-deny policy as data (enforce/netpolicy.py) and its nftables layout (ruleset.py)."""

from __future__ import annotations

from enforcer.enforce import ruleset as R
from enforcer.enforce.netpolicy import PeerRule, allows, policy_elements

OWN4, OWN6 = "172.30.0.2", "fd00::2"


def _elements(rules, services=None):
    services = services or {"app/db": ["172.30.0.3", "fd00::3"]}
    return policy_elements({"web": rules}, lambda n: [OWN4, OWN6] if n == "web" else [],
                           lambda s: services.get(s, []))


def test_service_peers_resolve_to_current_addresses_in_both_versions():
    el = _elements([PeerRule("out", "tcp", "app/db", 5432)])
    assert el["pox4"] == {(OWN4, "172.30.0.3", 6, 5432)}
    assert el["pox6"] == {(OWN6, "fd00::3", 6, 5432)}
    assert el["prot4"] == {(OWN4,)} and el["prot6"] == {(OWN6,)}
    assert allows(el, "out", OWN4, "172.30.0.3", "tcp", 5432) is True
    assert allows(el, "out", OWN4, "172.30.0.3", "tcp", 80) is False
    assert allows(el, "out", OWN4, "172.30.0.9", "tcp", 5432) is False
    assert allows(el, "in", OWN4, "172.30.0.3", "tcp", 5432) is False  # directions are apart
    assert allows(el, "out", "172.30.0.7", "172.30.0.3", "tcp", 80) is None  # not protected


def test_wildcards_and_networks_go_to_their_own_sets():
    el = _elements([PeerRule("in", "tcp", "*", 80), PeerRule("in", "udp", "*", "*"),
                    PeerRule("out", "tcp", "10.1.2.3", "*"), PeerRule("out", "udp", "10.0.0.0/8", 53),
                    PeerRule("out", "udp", "10.2.0.0/16", 53), PeerRule("out", "tcp", "loopback", 1)])
    assert el["pia4"] == {(OWN4, 6, 80)} and el["piw4"] == {(OWN4, 17)}
    assert el["pop4"] == {(OWN4, "10.1.2.3", 6)}
    assert el["pon4"] == {(OWN4, "10.0.0.0/8", 17, 53)}  # merged: interval sets refuse overlaps
    assert allows(el, "in", OWN4, "192.168.9.9", "tcp", 80) is True
    assert allows(el, "in", OWN4, "192.168.9.9", "tcp", 81) is False
    assert allows(el, "out", OWN4, "10.2.3.4", "udp", 53) is True
    assert allows(el, "out", OWN4, "10.1.2.3", "tcp", 9999) is True
    assert not any(OWN4 in str(e) and "127." in str(e) for s in el.values() for e in s)


def test_a_stopped_container_or_a_service_without_containers_adds_nothing():
    assert policy_elements({"web": [PeerRule("out", "tcp", "app/db", 1)]}, lambda n: [], lambda s: []) == {}
    el = _elements([PeerRule("out", "tcp", "app/gone", 1)], services={})
    assert el == {"prot4": {(OWN4,)}, "prot6": {(OWN6,)}}  # protected, nothing allowed
    assert allows(el, "out", OWN4, "172.30.0.3", "tcp", 1) is False


def test_policy_sets_are_inet_only_and_round_trip_through_json():
    assert set(R.POLICY_SETS) <= set(R.sets_of("inet")) and not set(R.POLICY_SETS) & set(R.sets_of("bridge"))
    el = _elements([PeerRule("out", "tcp", "app/db", 5432), PeerRule("out", "udp", "10.0.0.0/8", "*")])
    cmds = R.element_commands("add", "t", el)
    assert {c["add"]["element"]["family"] for c in cmds} == {"inet"}
    for name, elements in el.items():
        for e in elements:
            assert R.parse_element(name, R.element_json(name, e)) == e


def test_the_policy_chain_refuses_only_new_connections_after_every_allow_lookup():
    chains = R.policy_rules()
    assert all(m[0]["match"]["left"] == {"ct": {"key": "state"}} for _, m, _ in chains["policy"])
    jumps = [(m[0]["match"]["right"], v) for _, m, v in chains["policy"] if "jump" in v[0]]
    assert jumps and all(right == "new" for right, _ in jumps)
    stray = [c for c, m, v in chains["policy"] if v[-1] == {"drop": None}]
    assert stray == ["stray-from4", "stray-to4", "stray-from6", "stray-to6"]
    out4 = chains["policy-out4"]
    assert [v for _, _, v in out4][:-2] == [[{"return": None}]] * 6
    assert out4[-1][2][-1] == {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}
    layout = R.layout_commands("t")
    jumps = [c["add"]["rule"]["expr"][0]["jump"]["target"] for c in layout
             if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] == "forward"]
    assert jumps == ["blocks", "policy", "blocks"]  # inet: blocks then policy; bridge: blocks


def test_the_responder_says_blocked_only_for_what_the_applied_policy_refused():
    """`refused_by_policy` reads what the kernel holds (firewall.applied), not the profile."""
    from types import SimpleNamespace

    from enforcer.enforce.responder import Responder
    from enforcer.models import Container, NetworkAttachment
    from enforcer.sensors.events import NetworkEvent

    inv = SimpleNamespace(containers={})
    r = Responder("t", inv, None, None, None, lambda c: None)  # type: ignore[arg-type]
    c = Container(id="c1", name="web", app="app", service="web", image="i", state="running",
                  networks=[NetworkAttachment("n", ip=OWN4, ipv6=OWN6)])
    el = _elements([PeerRule("out", "tcp", "app/db", 5432)])
    ev = NetworkEvent(container_id="c1", direction="out", local_ip="0.0.0.0", remote_ip="172.30.0.9",
                      remote_port=5432)
    assert not r.refused_by_policy(c, ev)  # nothing applied yet: the kernel refused nothing
    r.firewall.applied = {**R.empty_ruleset(), **{k: frozenset(v) for k, v in el.items()}}
    assert r.refused_by_policy(c, ev)
    ev.remote_ip = "::ffff:172.30.0.3"  # a mapped address of the allowed peer
    assert not r.refused_by_policy(c, ev)
    ev.remote_ip, ev.remote_port = "fd00::3", 80
    assert r.refused_by_policy(c, ev)
    ev.local_ip, ev.remote_ip, ev.remote_port = f"::ffff:{OWN4}", "::ffff:172.30.0.9", 5432
    assert r.refused_by_policy(c, ev)  # a v4 flow on a v6 socket: the v4 policy refused it


def test_inbound_any_peer_excludes_known_containers_and_guarded_networks_fail_closed():
    """A published port ("in tcp * 8080") is for peers outside the known containers; the
    networks of protected containers refuse addresses no known container holds."""
    rules = {"web": [PeerRule("in", "tcp", "*", 8080), PeerRule("in", "tcp", "shop/api", 8080),
                     PeerRule("out", "tcp", "*", 443)]}
    web4, api4, sib4, gw4 = "172.30.0.2", "172.30.0.3", "172.30.0.4", "172.30.0.1"
    addrs = {"web": [web4]}
    el = policy_elements(rules, lambda n: addrs.get(n, []), lambda s: [api4] if s == "shop/api" else [],
                         containers=[web4, api4, sib4, "fd00::4"],
                         guarded=[("172.30.0.0/24", gw4), ("172.30.0.0/25", gw4), ("fd00::/64", "fd00::1")])
    assert el["ctr4"] == {(web4,), (api4,), (sib4,)} and el["ctr6"] == {("fd00::4",)}
    assert el["gnet4"] == {("172.30.0.0/24",)} and el["ggw4"] == {(gw4,)} and el["gnet6"] == {("fd00::/64",)}
    applied = {k: frozenset(v) for k, v in el.items()}
    assert allows(applied, "in", web4, "203.0.113.9", "tcp", 8080) is True  # outside, through the port
    assert allows(applied, "in", web4, gw4, "tcp", 8080) is True  # the host (docker-proxy)
    assert allows(applied, "in", web4, api4, "tcp", 8080) is True  # named by the profile
    assert allows(applied, "in", web4, sib4, "tcp", 8080) is False  # a sibling container: refused
    assert allows(applied, "out", web4, sib4, "tcp", 443) is True  # outbound "*" is any peer
    # No protected container, nothing guarded: no container set either (nothing to keep current).
    assert policy_elements({}, lambda n: [], lambda s: [], containers=[web4]) == {}
    rows = [c for c, _, _ in R.policy_rules()["policy"] if c.startswith("unbound")]
    assert rows == ["unbound-from4-tcp", "unbound-from4", "unbound-to4-tcp", "unbound-to4",
                    "unbound-from6-tcp", "unbound-from6", "unbound-to6-tcp", "unbound-to6"]
    for name in ("ctr4", "gnet4", "ggw6"):
        for e in el.get(name, ()):
            assert R.parse_element(name, R.element_json(name, e)) == e


def test_the_profile_does_not_let_a_published_port_cover_a_container_peer():
    from enforcer.profiles.model import Profile, peer_entry

    p = Profile(id=1, app="shop", service="web", image_digest="sha256:x")
    p.add(peer_entry("in", "tcp", "*", 8080, source="seed"))
    assert p.allows_peer("in", "tcp", "203.0.113.9", 8080)  # outside
    assert not p.allows_peer("in", "tcp", "shop/batch", 8080)  # a container must be named
    p.add(peer_entry("in", "tcp", "shop/batch", 8080))
    assert p.allows_peer("in", "tcp", "shop/batch", 8080)


def test_the_responder_guards_a_protected_containers_network_while_it_is_stopped():
    """The guard is learned from the running container (the host interface holding its
    address), kept while it is stopped or restarting, dropped when it leaves protect or
    is removed."""
    import ipaddress
    from types import SimpleNamespace

    from enforcer.enforce.responder import Responder
    from enforcer.models import Container, NetworkAttachment

    web = Container(id="c1", name="web", app="app", service="web", image="i", state="running",
                    networks=[NetworkAttachment("n", ip=OWN4, ipv6=OWN6)])
    modes = {"web": "protect"}
    inv = SimpleNamespace(containers={"c1": web})
    r = Responder("t", inv, None, SimpleNamespace(container_mode=lambda c: modes[c.name]), None,  # type: ignore[arg-type]
                  lambda c: None)
    r._host_ifaces = [ipaddress.ip_interface("172.30.0.1/24"), ipaddress.ip_interface("fd00::1/64"),
                      ipaddress.ip_interface("192.0.2.2/24")]
    policies = {"web": []}
    assert r._guarded(policies, {"web": [OWN4, OWN6]}) == {("172.30.0.0/24", "172.30.0.1"), ("fd00::/64", "fd00::1")}
    web.state = "exited"  # stopped: no addresses, no policy; the network stays guarded
    assert r._guarded({}, {}) == {("172.30.0.0/24", "172.30.0.1"), ("fd00::/64", "fd00::1")}
    modes["web"] = "alert"
    assert r._guarded({}, {}) == set()
    modes["web"] = "protect"
    r._guarded(policies, {"web": [OWN4]})
    inv.containers.clear()  # removed
    assert r._guarded({}, {}) == set()
