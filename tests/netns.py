"""Lab hosts for network fault tests: network namespaces, veth links, a lossy relay, and the daemon
and clients running inside them.

A ``Lab`` makes hosts (``ip netns``), links them with veth pairs (10.200.N.0/24,
the first host .1) or through the userspace relay of ``netns_relay.py``
(10.201.N.0/24, for loss, delay, jitter and reordering), and runs the
daemon (``twistd -n tia``) and clients (``netns_client.py``) in them as
processes. Names carry this process's id and a random tag, so parallel runs
never collide; addresses exist only inside the namespaces. ``Lab.close``
kills every process it started and deletes every namespace, whatever
happened: tests get a lab from ``lab_fixture`` (a finalizer), the bench from
``with Lab() as lab``. Without root, ``ip`` or namespaces, ``unavailable()``
says what is missing and the tests skip.

Shared by tests/test_netns_*.py (through ``netns_scenarios``) and
``python -m bench.faults``; nothing here imports the test suite's other modules.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CLIENT = HERE / "netns_client.py"
RELAY = HERE / "netns_relay.py"
CONTROL_PORT = 9000  # every server host is a namespace of its own: the port is always free

DAEMON_INI = """
[server]
control = tcp:{port}:interface={interface}
{server}

[udp]
mode = unicast

[source:eeg]
driver = ramp
rate = {rate}
blocksize = {blocksize}
channels = {channels}
type = eeg
"""


def unavailable() -> str | None:
    """Why this machine cannot make lab hosts (the tests skip with it), or None."""
    if sys.platform != "linux":
        return "network namespaces are Linux's"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    if shutil.which("ip") is None:
        return "the ip command is missing (Debian: apt-get install iproute2)"
    if twistd() is None:
        return "no twistd script next to the interpreter or on PATH"
    probe = f"tiaprobe{os.getpid()}{secrets.token_hex(2)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True, check=False)
    return None


def relay_unavailable() -> str | None:
    if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        return "/dev/net/tun is missing (the relay needs TUN devices)"
    return None


def twistd() -> str | None:
    candidate = Path(sys.executable).with_name("twistd")
    return str(candidate) if candidate.exists() else shutil.which("twistd")


def ip(*args: str) -> str:
    """Run ``ip ARGS``; its output, or RuntimeError with its error text."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def wait_until(condition: Callable[[], bool], timeout: float, what: str, step: float = 0.02) -> float:
    """Poll ``condition`` until it holds; the monotonic time it did. AssertionError naming ``what`` after
    ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(step)


class Output:
    """A process's stdout lines, read by a thread, each with the monotonic time it arrived."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[tuple[float, str]] = []
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with self._condition:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._condition.notify_all()
        with self._condition:
            self._condition.notify_all()

    def wait(self, match: Callable[[str], bool], timeout: float, what: str, after: float = 0.0) -> tuple[float, str]:
        """The first line since ``after`` (monotonic) that ``match``es, waiting up to ``timeout`` s for it."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                for arrived, line in self.lines:
                    if arrived >= after and match(line):
                        return arrived, line
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    tail = "\n".join(line for _, line in self.lines[-30:])
                    raise AssertionError(f"not within {timeout} s: {what}; last output:\n{tail}")
                self._condition.wait(left)

    def count(self, text: str) -> int:
        with self._condition:
            return sum(text in line for _, line in self.lines)

    def text(self) -> str:
        with self._condition:
            return "\n".join(line for _, line in self.lines)


@dataclass
class Link:
    """A veth pair (or the relay's two TUN devices) between ``a`` and ``b``."""

    a: Host
    b: Host
    a_device: str
    b_device: str
    a_address: str
    b_address: str

    def down(self) -> None:
        """Pull the cable at ``b``'s end."""
        self.b.ip("link", "set", self.b_device, "down")

    def up(self) -> None:
        self.b.ip("link", "set", self.b_device, "up")

    def shape(self, rate: str, burst: int = 4096, latency: str = "100ms") -> None:
        """Limit ``a`` to ``b`` (a token bucket, ``tc ... tbf``) to ``rate`` (``"40kbit"``)."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.a.namespace, "tc", "qdisc", "add", "dev", self.a_device, "root", "tbf",
             "rate", rate, "burst", str(burst), "latency", latency],
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"tc tbf on {self.a_device}: {done.stderr.strip() or 'tc is missing'}")


class Host:
    """One network namespace: a lab machine."""

    def __init__(self, lab: Lab, name: str) -> None:
        self.lab, self.name = lab, name
        self.namespace = f"{lab.tag}-{name}"
        ip("netns", "add", self.namespace)
        self.ip("link", "set", "lo", "up")

    def ip(self, *args: str) -> str:
        return ip("-n", self.namespace, *args)

    def spawn(self, argv: list[str], cwd: Path | None = None) -> subprocess.Popen[str]:
        """Run ``argv`` in this host (stdout and stderr piped together); the lab kills it at the end."""
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, *argv], cwd=cwd, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lab.processes.append(process)
        return process

    def client(self, host: str, **options: Any) -> Client:
        """A ``netns_client.py`` client of the server at ``host`` (see there for ``options``)."""
        return Client(self, {"host": host, **options})

    def remove(self) -> None:
        """The machine vanishes: its cable first (no FIN or reset escapes), then its processes and namespace."""
        for device in self.ip("-o", "link", "show").splitlines():
            name = device.split(":")[1].strip().split("@")[0]
            if name != "lo":
                self.ip("link", "set", name, "down")
        self.lab.stop_processes(self)
        ip("netns", "delete", self.namespace)
        self.lab.hosts.remove(self)


class Client:
    """A client process and the JSON lines it reports."""

    def __init__(self, host: Host, options: dict[str, Any]) -> None:
        self.host, self.options = host, options
        self.process = host.spawn([sys.executable, str(CLIENT), json.dumps(options)])
        self.output = Output(self.process)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = []
        for _, line in list(self.output.lines):
            if line.startswith("{"):
                event: dict[str, Any] = json.loads(line)
                if name is None or event["event"] == name:
                    found.append(event)
        return found

    @property
    def latest(self) -> dict[str, Any]:
        """The last figures reported (all zero before the first)."""
        for event in reversed(self.events()):
            if "packets" in event:
                latest: dict[str, Any] = event
                return latest
        return {"packets": 0, "lost": 0, "gaps": 0, "reordered": 0, "duplicates": 0, "wrong": 0}

    def wait_for(self, condition: Callable[[dict[str, Any]], bool], what: str, timeout: float = 15.0,
                 after: float = 0.0) -> dict[str, Any]:
        """The first line reported since ``after`` (monotonic) that meets ``condition``."""
        def match(text: str) -> bool:
            return text.startswith("{") and condition(json.loads(text))
        _, line = self.output.wait(match, timeout, f"{what} (the client in {self.host.name})", after)
        return dict(json.loads(line))

    def wait(self, event: str, timeout: float = 15.0, after: float = 0.0) -> dict[str, Any]:
        """The first ``event`` line (``started``, ``resumed``, ``error``...) since ``after``."""
        return self.wait_for(lambda line: line["event"] == event, event, timeout, after)

    def wait_packets(self, count: int, timeout: float = 15.0) -> dict[str, Any]:
        """Its figures once it has ``count`` packets."""
        return self.wait_for(lambda line: line.get("packets", 0) >= count, f"{count} packets", timeout)

    def stop(self, timeout: float = 10.0) -> dict[str, Any]:
        """SIGTERM (it stops streaming and says goodbye); its final figures."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _, line = self.output.wait(lambda text: '"event": "final"' in text, timeout, "the client's final figures")
        self.process.wait(timeout)
        return dict(json.loads(line))


class Daemon:
    """``twistd -n tia`` in a host, with the ramp source the clients check values against."""

    def __init__(self, host: Host, directory: Path, interface: str = "0.0.0.0", server: str = "",
                 rate: int = 1000, blocksize: int = 10, channels: int = 8) -> None:
        self.host = host
        self.config = directory / f"{host.namespace}.ini"
        self.config.write_text(textwrap.dedent(DAEMON_INI).format(
            port=CONTROL_PORT, interface=interface, server=textwrap.dedent(server), rate=rate,
            blocksize=blocksize, channels=channels,
        ))
        executable = twistd()
        assert executable is not None
        self.process = host.spawn(
            [executable, "-n", "--pidfile=", "--logfile=-", "tia", "--config", str(self.config)], cwd=directory
        )
        self.output = Output(self.process)
        self.output.wait(lambda line: "TiA server streaming" in line, 30, "the daemon listening")

    @property
    def pid(self) -> int:
        return self.process.pid  # ip netns exec execs twistd: the same process

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def connections(self, peer: str | None = None) -> list[tuple[str, int, str, int]]:
        """The daemon namespace's TCP connections (neither listening nor in TIME_WAIT, which holds no state
        of ours): (local, port, peer, port)."""
        found = []
        for line in Path(f"/proc/{self.pid}/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] in ("06", "0A"):  # TIME_WAIT, LISTEN
                continue
            local, remote = (_address(text) for text in fields[1:3])
            if peer is None or remote[0] == peer:
                found.append((*local, *remote))
        return found

    def wait_log(self, text: str | re.Pattern[str], timeout: float = 15.0, after: float = 0.0) -> tuple[float, str]:
        def match(line: str) -> bool:
            return text in line if isinstance(text, str) else text.search(line) is not None
        return self.output.wait(match, timeout, f"the daemon logging {text!r}", after)

    def stop(self) -> None:
        """SIGTERM: a graceful stop (clients hear ServerStateShutdown)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _address(text: str) -> tuple[str, int]:
    host, port = text.split(":")
    return socket.inet_ntoa(struct.pack("<I", int(host, 16))), int(port, 16)


class RelayLink(Link):
    """A link through ``netns_relay.py``: every packet dropped, duplicated, delayed by seeded chance."""

    process: subprocess.Popen[str]
    output: Output

    def report(self) -> dict[str, Any]:
        """What the relay carried: ``to_left``/``to_right`` counts, per UDP port the numbers written and lost."""
        before = time.monotonic()
        assert self.process.stdin is not None
        self.process.stdin.write("report\n")
        self.process.stdin.flush()
        _, line = self.output.wait(lambda text: text.startswith("{"), 10, "the relay's report", before)
        return dict(json.loads(line))


class Lab:
    """The hosts, links and processes of one test; ``close`` removes all of them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.tag = f"tia{os.getpid()}x{secrets.token_hex(2)}"
        remove_stale()
        self.hosts: list[Host] = []
        self.processes: list[subprocess.Popen[str]] = []
        self._links = 0

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def host(self, name: str) -> Host:
        host = Host(self, name)
        self.hosts.append(host)
        return host

    def link(self, a: Host, b: Host, mtu: int = 1500) -> Link:
        """A veth pair, ``a`` 10.200.N.1 and ``b`` 10.200.N.2 on a /24."""
        self._links += 1
        number = self._links
        a_device, b_device = f"to-{b.name}"[:15], f"to-{a.name}"[:15]
        a.ip("link", "add", a_device, "mtu", str(mtu), "type", "veth", "peer", "name", b_device, "netns", b.namespace)
        b.ip("link", "set", b_device, "mtu", str(mtu))
        link = Link(a, b, a_device, b_device, f"10.200.{number}.1", f"10.200.{number}.2")
        self._address(link, 24)
        return link

    def relay_link(self, a: Host, b: Host, seed: int, **impairments: float) -> RelayLink:
        """``a`` (10.201.N.1) and ``b`` (10.201.N.2) joined by the relay (``loss``, ``duplicate``,
        ``delay``, ``jitter``); ``a`` is the server side (its UDP to ``b`` is accounted for)."""
        self._links += 1
        number = self._links
        process = subprocess.Popen(
            [sys.executable, str(RELAY), b.namespace, a.namespace, json.dumps({"seed": seed, **impairments})],
            text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        output = Output(process)
        output.wait(lambda line: line == "ready", 10, "the relay's TUN devices")
        link = RelayLink(a, b, "relay0", "relay0", f"10.201.{number}.1", f"10.201.{number}.2")
        link.process, link.output = process, output
        self._address(link, 32)
        return link

    def _address(self, link: Link, prefix: int) -> None:
        for host, device, address, peer in (
            (link.a, link.a_device, link.a_address, link.b_address),
            (link.b, link.b_device, link.b_address, link.a_address),
        ):
            if prefix == 32:  # point to point
                host.ip("addr", "add", address, "peer", peer, "dev", device)
            else:
                host.ip("addr", "add", f"{address}/{prefix}", "dev", device)
            host.ip("link", "set", device, "up")

    def stop_processes(self, host: Host | None = None) -> None:
        """Kill the processes started (in ``host``, or all), by their ids."""
        prefix = None if host is None else ["ip", "netns", "exec", host.namespace]
        for process in list(self.processes):
            if prefix is not None and list(process.args)[:4] != prefix:  # type: ignore[arg-type]
                continue
            if process.poll() is None:
                process.kill()
            process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()
            self.processes.remove(process)

    def close(self) -> None:
        """Every process killed, every namespace deleted (their veth and TUN devices go with them)."""
        try:
            self.stop_processes()
        finally:
            for host in list(self.hosts):
                subprocess.run(["ip", "netns", "delete", host.namespace], capture_output=True, check=False)
            self.hosts.clear()
            leftover = [name for name in ip("netns", "list").split() if name.startswith(self.tag)]
            assert not leftover, f"namespaces left behind: {leftover}"


STALE = re.compile(r"^tia(\d+)x[0-9a-f]{4}-")


def remove_stale() -> None:
    """Delete the namespaces of labs whose process is gone (killed before it could clean up)."""
    for name in ip("netns", "list").split():
        stale = STALE.match(name)
        if stale is not None and not Path(f"/proc/{stale.group(1)}").exists():
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


def lab_fixture(directory: Path) -> Iterator[Lab]:
    """For a pytest fixture: a lab, or a skip naming what is missing; closed whatever happens."""
    import pytest

    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    lab = Lab(directory)
    try:
        yield lab
    finally:
        lab.close()
