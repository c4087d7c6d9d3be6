"""Network fault scenarios on lab hosts (tests/netns.py): each builds its hosts, runs the daemon and
clients, injects one fault and returns what everyone saw as an ``Outcome``.

tests/test_netns_*.py assert on an outcome's ``details``; ``python -m bench.faults`` prints the
outcomes as a table (README, "Network faults"). Every client checks the ramp's values and its
connection packet numbers itself (netns_client.py); "exact" means all values right, no gap, no
repeat. Waits are on events (a client's figures, a log line, the daemon's connections), each
bounded; the only fixed wait is the partition's own length.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

from netns import Client, Daemon, Lab, wait_until

PACKET_RATE = 100  # the lab daemon's default: 1000 Hz in blocks of 10


@dataclass
class Outcome:
    """One row of the fault report, and the figures behind it."""

    scenario: str
    victim: str  # what the faulty client saw
    healthy: str  # what the others saw
    detected: str  # how long until the server (or the client) noticed
    after: str  # the daemon's resources afterwards
    details: dict[str, Any] = field(default_factory=dict)


def exact(figures: dict[str, Any]) -> bool:
    """Every value right, no gap, nothing late or repeated."""
    return all(figures[key] == 0 for key in ("wrong", "gaps", "lost", "reordered", "duplicates", "repeated_ids"))


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def healthy_text(finals: list[dict[str, Any]]) -> str:
    packets = "/".join(str(f["packets"]) for f in finals)
    state = "exact, no gap" if all(exact(f) for f in finals) else "NOT EXACT"
    return f"{plural(len(finals), 'client')}: {packets} packets, {state}"


def losses_text(figures: dict[str, Any]) -> str:
    return (f"{figures['packets']} packets, {figures['lost']} lost in {plural(figures['gaps'], 'gap')}, "
            f"{figures['reordered']} late, {plural(figures['duplicates'], 'repeat')} dropped")


def resources(daemon: Daemon, peer: str | None = None) -> str:
    text = f"{daemon.fds()} fds, {plural(len(daemon.connections()), 'TCP connection')}"
    if peer is not None:
        text += f" ({len(daemon.connections(peer))} from the victim)"
    return text


def stop_all(*clients: Client) -> list[dict[str, Any]]:
    return [client.stop() for client in clients]


# ------------------------------------------------------------------ 1: vanished clients


def vanished(lab: Lab) -> Outcome:
    """Three clients vanish at once: a streaming one whose cable is pulled (control, data and
    server-state connections), a quiet one (control and server-state only, cable pulled) and a
    streaming host that is removed with its namespace. ``max_connections`` is full until the
    server notices; two healthy clients stream on."""
    srv = lab.host("srv")
    names = ("cable", "quiet", "gone", "ok1", "ok2", "new")
    hosts = {name: lab.host(name) for name in names}
    links = {name: lab.link(srv, host) for name, host in hosts.items()}
    daemon = Daemon(srv, lab.directory, server="max_connections = 5")

    def client(name: str, **options: Any) -> Client:
        return hosts[name].client(links[name].a_address, **options)

    streaming = [
        client("cable", kind="stream", state=True), client("gone", kind="blocking"),
        client("ok1", kind="blocking"), client("ok2", kind="stream"),
    ]
    quiet = client("quiet", kind="idle")
    quiet.wait("started")
    for one in streaming:
        one.wait_packets(20)
    victims = ("cable", "quiet", "gone")
    before = {name: len(daemon.connections(links[name].b_address)) for name in victims}
    refused = client("new", kind="blocking").wait("error")["error"]
    wait_until(lambda: not daemon.connections(links["new"].b_address), 5, "the refused connection closed")
    fds_before = daemon.fds()

    start = time.monotonic()
    links["cable"].down()
    links["quiet"].down()
    hosts["gone"].remove()
    pending = {name: links[name].b_address for name in victims}
    detected: dict[str, float] = {}

    def all_dropped() -> bool:
        now = time.monotonic()
        for name, address in list(pending.items()):
            if not daemon.connections(address):
                detected[name] = now - start
                del pending[name]
        return not pending

    wait_until(all_dropped, 40, "the server dropping the vanished clients", 0.05)
    fds_detected = daemon.fds()
    newcomer = client("new", kind="blocking")
    newcomer.wait_packets(20)
    healthy = stop_all(streaming[2], streaming[3], newcomer)
    gone_lines = [line for _, line in daemon.output.lines if "is gone" in line]
    return Outcome(
        "client vanishes (cable pulled, quiet client, host removed)",
        f"gone; the server closed cable's {before['cable']} connections (control, data, state), quiet's "
        f"{before['quiet']} (control, state), gone's {before['gone']} (control, data); "
        f"{len(gone_lines)} log lines (one per data connection)",
        healthy_text(healthy),
        ", ".join(f"{name} {seconds:.1f} s" for name, seconds in detected.items()),
        f"{fds_before} fds before, {fds_detected} once the victims' {sum(before.values())} connections were closed; "
        "the freed slot took a new client at once",
        {"detected": detected, "fds": (fds_before, fds_detected), "before": before, "refused": refused,
         "healthy": healthy, "gone_lines": gone_lines, "victims": {name: links[name].b_address for name in victims},
         "connections_after": {name: daemon.connections(links[name].b_address) for name in victims}},
    )


# ------------------------------------------------------------------ 2: a link slower than the stream


def slow_link(lab: Lab) -> Outcome:
    """A client behind a 512 kbit/s token bucket, the stream 1 Mbit/s (32 channels at 1 kHz)."""
    srv, slow, ok = lab.host("srv"), lab.host("slow"), lab.host("ok")
    slow_link_, ok_link = lab.link(srv, slow), lab.link(srv, ok)
    daemon = Daemon(srv, lab.directory, server="backlog = 0.5", channels=32)
    slow_link_.shape("512kbit")
    victim = slow.client(slow_link_.a_address, kind="blocking")
    healthy = ok.client(ok_link.a_address, kind="blocking")
    started = victim.wait("started")["t"]
    dropping, _ = daemon.wait_log("is not keeping up", 30)
    victim_seen = victim.wait_for(lambda line: line.get("gaps", 0) > 0, "its first gap", 30)["t"]
    finals = stop_all(victim, healthy)
    return Outcome(
        "link slower than the stream (tbf 512 kbit/s, stream 1 Mbit/s)",
        losses_text(finals[0]) + f", values {'exact' if finals[0]['wrong'] == 0 else 'WRONG'}",
        healthy_text(finals[1:]),
        f"server drops after {dropping - started:.1f} s, client sees the gap after {victim_seen - started:.1f} s",
        resources(daemon) + (" (the victim's, draining through the slow link)" if daemon.connections() else ""),
        {"victim": finals[0], "healthy": finals[1:], "dropping_after": dropping - started},
    )


# ------------------------------------------------------------------ 3: loss, delay, jitter, reordering


def relay_view(written: list[int], delivered: list[int]) -> dict[str, Any]:
    """What a client should count that received ``written`` (the relay's output to it, in order) up to
    the moment it had handed out ``delivered``: an independent recount of PacketSequence's figures.

    Repeats arriving after the last packet handed out may or may not have been read before the
    client stopped, hence a range for them.
    """
    first, highest = written[0], -1
    seen: set[int] = set()
    late = repeats = 0
    order: list[int] = []
    position = len(written)
    for index, number in enumerate(written):
        if len(order) == len(delivered):
            position = index
            break
        if number in seen or number < first:
            repeats += 1
            continue
        late += number < highest
        highest = max(highest, number)
        seen.add(number)
        order.append(number)
    trailing = 0
    for number in written[position:]:
        if number not in seen and number >= first:
            break
        trailing += 1
    return {"order": order == delivered, "lost": highest - first + 1 - len(seen), "late": late,
            "repeats": (repeats, repeats + trailing)}


def agrees(figures: dict[str, Any], view: dict[str, Any]) -> bool:
    """A client's own counts are the relay's recount (``relay_view``)."""
    low, high = view.get("repeats", (-1, -1))
    return bool(view) and (figures["lost"], figures["reordered"]) == (view["lost"], view["late"]) and (
        low <= figures["duplicates"] <= high)


def lossy(lab: Lab, seed: int = 7) -> Outcome:
    """Clients behind the relay: 2 % loss, 1 % duplicates, 10-30 ms delay (so reordering), both ways."""
    srv, far, ok = lab.host("srv"), lab.host("far"), lab.host("ok")
    relay = lab.relay_link(srv, far, seed, loss=0.02, duplicate=0.01, delay=0.01, jitter=0.02)
    ok_link = lab.link(srv, ok)
    daemon = Daemon(srv, lab.directory)
    tcp = far.client(relay.a_address, kind="blocking")
    udp_blocking = far.client(relay.a_address, kind="blocking", transport="UDP", numbers=True)
    udp_stream = far.client(relay.a_address, kind="stream", transport="UDP", numbers=True)
    healthy = ok.client(ok_link.a_address, kind="stream")
    for client in (tcp, udp_blocking, udp_stream, healthy):
        client.wait_packets(300, timeout=30)
    finals = stop_all(tcp, udp_blocking, udp_stream, healthy)
    report = relay.report()
    flows = report["to_left"]["udp"]
    expected = []
    for figures in finals[1:3]:
        views = [relay_view(flow["written"], figures["numbers"]) for flow in flows.values() if flow["written"]]
        expected.append(next((view for view in views if view["order"]), {}))
    udp_text = "; ".join(f"{kind} UDP {losses_text(f)}" for kind, f in zip(("blocking", "Twisted"), finals[1:3],
                                                                            strict=True))
    return Outcome(
        "lossy link (relay: 2 % loss, 1 % duplicates, 10-30 ms delay)",
        f"TCP {'exact' if exact(finals[0]) else 'NOT EXACT'} ({finals[0]['packets']} packets, "
        f"{report['to_left']['dropped'] + report['to_right']['dropped']} IP packets lost and resent); {udp_text}; "
        + ("counts equal the relay's" if all(agrees(f, e) for f, e in zip(finals[1:3], expected, strict=True))
           else "COUNTS DIFFER FROM THE RELAY'S"),
        healthy_text(finals[3:]),
        "at once (each gap when the next packet arrives)",
        resources(daemon),
        {"tcp": finals[0], "udp": finals[1:3], "expected": expected, "healthy": finals[3], "relay": report},
    )


# ------------------------------------------------------------------ 4: partitions and restarts


def partition(lab: Lab, seconds: float = 5.0) -> Outcome:
    """A 5 s partition (cable out, back in) under two ``TiAStream`` clients with reconnection: one with a
    2 s ``dataTimeout`` (it reconnects), one with the default 10 s (its TCP connection rides it out)."""
    srv, far, ok = lab.host("srv"), lab.host("far"), lab.host("ok")
    link, ok_link = lab.link(srv, far), lab.link(srv, ok)
    daemon = Daemon(srv, lab.directory, channels=32)  # 1 Mbit/s: more than the server's buffers hold for 5 s
    again = far.client(link.a_address, kind="stream", reconnect=True, data_timeout=2, retry=0.5)
    rides = far.client(link.a_address, kind="stream", reconnect=True)
    healthy = ok.client(ok_link.a_address, kind="stream")
    for client in (again, rides, healthy):
        client.wait_packets(50)
    start = time.monotonic()
    link.down()
    time.sleep(seconds)  # the partition itself
    link.up()
    resumed = again.wait("resumed", 30, after=start)
    rides_seen = rides.wait_for(lambda line: line.get("gaps", 0) > 0, "the gap", 30, start)["t"]
    wait_until(lambda: len(daemon.connections(link.b_address)) == 4, 30,
               "the old connections of the reconnected client closed")
    again.wait_packets(again.latest["packets"] + 50)
    finals = stop_all(again, rides, healthy)
    resume = finals[0]["resumes"][0]
    return Outcome(
        f"{seconds:g} s partition, TiAStream reconnecting",
        f"dataTimeout 2 s: reconnected, {resume['first_id'] - resume['last_id'] - 1} ticks lost "
        f"(ids {resume['last_id']} -> {resume['first_id']}), {finals[0]['repeated_ids']} repeated; "
        f"default 10 s: kept its connection, {finals[1]['lost']} packets lost in {finals[1]['gaps']} gap, "
        f"{finals[1]['repeated_ids']} repeated",
        healthy_text(finals[2:]),
        f"client resumed {resumed['t'] - start:.1f} s after the cut, the other saw its gap "
        f"after {rides_seen - start:.1f} s",
        f"{resources(daemon, link.b_address)}: the old connections closed by the client's FIN",
        {"again": finals[0], "rides": finals[1], "healthy": finals[2], "resumed_after": resumed["t"] - start},
    )


def restart(lab: Lab) -> Outcome:
    """The daemon stopped (SIGTERM) and started again under a ``TiAStream`` with reconnection."""
    srv, far = lab.host("srv"), lab.host("far")
    link = lab.link(srv, far)
    daemon = Daemon(srv, lab.directory)
    client = far.client(link.a_address, kind="stream", reconnect=True, retry=0.5, state=True)
    client.wait_packets(300)  # longer than the restart takes, so that the new server's ids start lower
    start = time.monotonic()
    daemon.stop()
    stopped = time.monotonic()
    daemon = Daemon(srv, lab.directory)
    up = time.monotonic()
    resumed = client.wait("resumed", 30, after=start)
    client.wait_packets(client.latest["packets"] + 50)
    (final,) = stop_all(client)
    resume = final["resumes"][0]
    states = [event["state"] for event in client.events("state")]
    return Outcome(
        "server restart, TiAStream reconnecting",
        f"ServerStateShutdown, reconnected; ids start over ({resume['last_id']} -> {resume['first_id']}); "
        f"{resume['seconds']:.2f} s reported lost (wall clock); {final['repeated_ids']} repeated",
        "-",
        f"resumed {resumed['t'] - up:.1f} s after the new server listened (restart took {up - start:.1f} s)",
        resources(daemon),
        {"final": final, "states": states, "downtime": up - start, "stop_took": stopped - start},
    )


# ------------------------------------------------------------------ 5: datagrams larger than the MTU


def big_datagrams(lab: Lab, loss: float = 0.02) -> Outcome:
    """256 channels x blocksize 8 (8229-byte datagrams) to a client on a clean 1500-byte veth and to
    one behind the relay losing 2 % of IP packets; a TCP client behind the same relay."""
    srv, near, far = lab.host("srv"), lab.host("near"), lab.host("far")
    near_link = lab.link(srv, near)
    relay = lab.relay_link(srv, far, 11, loss=loss)
    daemon = Daemon(srv, lab.directory, rate=2048, blocksize=8, channels=256)
    warnings = [line for _, line in daemon.output.lines if "MTU" in line]
    clean = near.client(near_link.a_address, kind="blocking", transport="UDP")
    lossy_ = far.client(relay.a_address, kind="blocking", transport="UDP", numbers=True)
    tcp = far.client(relay.a_address, kind="blocking")
    for client in (clean, lossy_, tcp):
        client.wait_packets(600, timeout=30)
    finals = stop_all(clean, lossy_, tcp)
    report = relay.report()["to_left"]
    first_fragment_losses = sum(len(flow["dropped"]) for flow in report["udp"].values())
    seen = finals[1]
    datagram_loss = seen["lost"] / (seen["lost"] + seen["packets"])
    expected_loss = 1 - (1 - loss) ** 6
    return Outcome(
        "8229-byte UDP packets, 1500-byte MTU",
        f"clean veth: {losses_text(finals[0])}; {loss:.0%} IP loss: {datagram_loss:.1%} of packets lost "
        f"(6 fragments each: {expected_loss:.1%} expected); TCP through the same loss "
        f"{'exact' if exact(finals[2]) else 'NOT EXACT'}",
        "-",
        f"start-up warning: {len(warnings)} line",
        resources(daemon),
        {"warnings": warnings, "clean": finals[0], "lossy": seen, "tcp": finals[2], "relay": report,
         "datagram_loss": datagram_loss, "expected_loss": expected_loss,
         "first_fragment_losses": first_fragment_losses},
    )


# ------------------------------------------------------------------ 6: exposure on a real interface


def exposure(lab: Lab) -> Outcome:
    """The control port bound to one namespace address with ``allow``: an allowed host streams, another
    network is refused, and an allowed stranger cannot take someone else's data port."""
    srv = lab.host("srv")
    hosts = {name: lab.host(name) for name in ("lab", "office", "peer")}
    links = {name: lab.link(srv, host) for name, host in hosts.items()}
    for name in ("office", "peer"):  # they reach the lab subnet through the server
        hosts[name].ip("route", "add", "default", "via", links[name].a_address)
    bound = links["lab"].a_address
    allow = f"{links['lab'].a_address.rsplit('.', 1)[0]}.0/24, {links['peer'].a_address.rsplit('.', 1)[0]}.0/24"
    daemon = Daemon(srv, lab.directory, interface=bound, server=f"allow = {allow}")
    owner = hosts["lab"].client(bound, kind="blocking", hold=True)
    port = owner.wait("port")["port"]
    thief = hosts["peer"].spawn([sys.executable, "-c", THIEF.format(host=bound, port=port)])
    thief_saw = thief.communicate(timeout=15)[0].strip()
    assert owner.process.stdin is not None
    owner.process.stdin.write("go\n")
    owner.process.stdin.flush()
    owner.wait_packets(50)
    office = hosts["office"].client(bound, kind="blocking").wait("error")["error"]
    unbound = hosts["office"].client(links["office"].a_address, kind="blocking").wait("error")["error"]
    (final,) = stop_all(owner)
    refusals = [line for _, line in daemon.output.lines if "refused a" in line]
    return Outcome(
        "control bound to one namespace address, allow-list",
        f"other network: '{office}'; other address: '{unbound}'; allowed stranger on the data port: {thief_saw}",
        healthy_text([final]),
        "at connect",
        resources(daemon),
        {"office": office, "unbound": unbound, "thief": thief_saw, "owner": final, "refusals": refusals},
    )


THIEF = """
import socket
with socket.create_connection(("{host}", {port}), timeout=5) as sock:
    sock.settimeout(5)
    print("closed at once" if sock.recv(100) == b"" else "GOT DATA")
"""

SCENARIOS = (vanished, slow_link, lossy, partition, restart, big_datagrams, exposure)
