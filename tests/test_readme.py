"""README.rst is executed: every command and every Python example runs here, as written.

The examples are read out of README.rst itself (docutils), so there is one
source and nothing to drift. Each code block is run according to its kind:
a ``python`` block as a script against the daemon the README talks about; a
literal block only with a marker comment right before it saying what it is,
so a new block cannot go untested unnoticed::

    .. readme-test: KIND [key=value ...]

KIND is ``shell`` (each command run with bash; ``twistd`` commands are started,
streamed from, and stopped; ``pip install`` steps are what this suite's own
install already did), ``python``, ``module`` (written to ``file=NAME``,
imported, and its ``DRIVER``, if any, built and read), ``ini`` / ``toml`` (a
file fragment that must parse), ``output`` (what a program prints: with
``of=ID``, block ID is run with no server and must fail printing these lines;
without, an example whose program runs in the tests of its own), or ``skip
reason=...``. Keys: ``server=demo|tls|none`` (the daemon that must run:
``demo`` is the README's own ``twistd -n --pidfile= tia --config
etc/server.ini`` on 127.0.0.1:9000, ``tls`` the TLS example config),
``cwd=PATH`` (relative to the scratch directory), ``name=ID``, ``needs=ID``
(run block ID first) and ``setup=journal:PATH`` (a server recording journal
made at PATH first, for ``tia convert``).

Everything runs in a scratch directory holding a copy of ``etc/``, with the
installed ``twistd``, ``tia`` and ``python``. The examples connect to port
9000, as written: where that port is taken, the tests skip and say so.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

docutils = pytest.importorskip("docutils", reason="docutils reads the README's code blocks (the test extra)")
from docutils import nodes  # noqa: E402
from docutils.core import publish_doctree  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.rst"
BIN = Path(sys.executable).parent
README_PORT = 9000
PYTHON_TIMEOUT = 90.0
MARKER = "readme-test:"


@dataclass
class Block:
    line: int
    language: str
    text: str
    kind: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"README.rst:{self.line}:{self.kind}"


def _marker(node: nodes.Node) -> str | None:
    """The ``readme-test:`` comment right before ``node`` (its previous sibling), if any."""
    parent = node.parent
    if parent is None:
        return None
    index = parent.index(node)
    if index == 0:
        return None
    previous = parent[index - 1]
    text: str = previous.astext().strip()
    if isinstance(previous, nodes.comment) and text.startswith(MARKER):
        return text[len(MARKER):].strip()
    return None


def read_blocks() -> list[Block]:
    settings = {"report_level": 5, "halt_level": 5, "syntax_highlight": "none"}
    tree = publish_doctree(README.read_text(encoding="utf-8"), settings_overrides=settings)
    blocks = []
    for node in tree.findall(nodes.literal_block):
        classes = [c for c in node.get("classes", []) if c != "code"]
        language = classes[0] if classes else "literal"
        marker = _marker(node)
        options: dict[str, str]
        if marker is None:
            kind, options = ("python", {}) if language == "python" else ("unmarked", {})
        else:
            kind, _, rest = marker.partition(" ")
            options = {}
            if kind == "skip":
                options["reason"] = rest.removeprefix("reason=").strip()
            else:
                for item in shlex.split(rest):
                    key, _, value = item.partition("=")
                    options[key] = value
        blocks.append(Block(node.line or 0, language, node.astext(), kind, options))
    return blocks


BLOCKS = read_blocks()
BY_NAME = {block.options["name"]: block for block in BLOCKS if "name" in block.options}


def test_every_block_says_what_it_is() -> None:
    unmarked = [f"line {b.line}: {b.text.splitlines()[0][:60]!r}" for b in BLOCKS if b.kind == "unmarked"]
    assert not unmarked, "README literal blocks without a '.. readme-test: KIND' marker: " + "; ".join(unmarked)
    known = {"shell", "python", "module", "ini", "toml", "output", "skip"}
    assert {b.kind for b in BLOCKS} <= known


def test_the_readme_renders_without_warnings() -> None:
    """What PyPI shows (long_description): no reST errors or warnings."""
    from io import StringIO

    errors = StringIO()
    publish_doctree(README.read_text(encoding="utf-8"),
                    settings_overrides={"warning_stream": errors, "report_level": 2, "syntax_highlight": "none"})
    assert errors.getvalue() == ""


# ---------------------------------------------------------------- the scratch directory and daemons


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until the daemon on ``port`` accepts connections (a TLS one: the examples do the rest)."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    process.kill()
    output = process.communicate()[0].decode(errors="replace")
    pytest.fail(f"the daemon did not listen on port {port}:\n{output[-3000:]}")


def _wait_streaming(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until the daemon on ``port`` streams (the CI's stream check), or fail with its log."""
    check = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "stream-check"), str(port), "20"],
        capture_output=True, text=True, timeout=timeout + 10, check=False,
    )
    if check.returncode != 0 or process.poll() is not None:
        process.kill()
        output = process.communicate()[0].decode(errors="replace")
        pytest.fail(f"the daemon did not stream on port {port}: {check.stdout.strip()}\n{output[-3000:]}")


class Daemons:
    """The daemons the README's blocks need, one at a time (they all want port 9000)."""

    def __init__(self, scratch: Path, env: dict[str, str]) -> None:
        self.scratch, self.env = scratch, env
        self.running: tuple[str, subprocess.Popen[bytes]] | None = None

    def start(self, name: str, argv: list[str], cwd: Path, port: int, tls: bool = False) -> subprocess.Popen[bytes]:
        self.stop()
        if not _port_free(port):
            pytest.skip(f"port {port} is in use here: the README's commands and examples use it as written")
        process = subprocess.Popen(argv, cwd=cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        (_wait_listening if tls else _wait_streaming)(port, process)
        self.running = (name, process)
        return process

    def ensure(self, name: str) -> None:
        if name == "none":
            self.stop()
            return
        if self.running is not None and self.running[0] == name:
            return
        config = {"demo": "etc/server.ini", "tls": "etc/examples/tls.ini"}[name]
        if name == "tls":
            run_block(BY_NAME["certs"], self)  # the README's openssl commands make its certificates
        argv = ["twistd", "-n", "--pidfile=", "tia", "--config", config]
        self.start(name, argv, self.scratch, README_PORT, tls=name == "tls")

    def stop(self) -> None:
        if self.running is None:
            return
        _, process = self.running
        self.running = None
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemons]:
    scratch = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "etc", scratch / "etc")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
    running = Daemons(scratch, env)
    try:
        yield running
    finally:
        running.stop()


# ---------------------------------------------------------------- running one block

_done: set[int] = set()


def _commands(text: str) -> list[str]:
    """The commands of a shell block: comments dropped, backslash continuations joined."""
    commands, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        current += line.rstrip()[:-1] + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            commands.append(current.strip())
            current = ""
    return commands


def _run_daemon_command(command: str, daemons: Daemons, cwd: Path) -> None:
    """A ``twistd`` command of the README: start it, stream from it, stop it."""
    argv = shlex.split(command)
    port = README_PORT
    if "--port" in argv:
        port = int(argv[argv.index("--port") + 1])
    process = daemons.start(f"command:{command}", argv, cwd, port)
    daemons.stop()
    assert process.returncode is not None


def _run_shell(block: Block, daemons: Daemons, cwd: Path) -> None:
    for command in _commands(block.text):
        steps = [step.strip() for step in command.split("&&")]
        steps = [s for s in steps if not re.match(r"python -m pip install\b", s)]  # this suite's install
        if not steps:
            continue
        if steps[-1].startswith("twistd "):
            for step in steps[:-1]:
                _bash(step, daemons, cwd)
            _run_daemon_command(steps[-1], daemons, cwd)
            continue
        _bash(" && ".join(steps), daemons, cwd)


def _bash(command: str, daemons: Daemons, cwd: Path) -> None:
    result = subprocess.run(["bash", "-c", command], cwd=cwd, env=daemons.env, capture_output=True, text=True,
                            timeout=PYTHON_TIMEOUT, check=False)
    assert result.returncode == 0, f"{command!r} exited {result.returncode}:\n{result.stdout}{result.stderr}"


JOURNAL_INI = """
[server]
control = tcp:{port}:interface=127.0.0.1
[recording]
enabled = on
formats = raw
directory = {directory}
[source:eeg]
driver = ramp
rate = 100
channels = 2
type = eeg
"""


def make_journal(target: Path, daemons: Daemons) -> None:
    """A short server recording (raw journal), renamed to ``target`` (``NAME.tia`` and its ``NAME.json``)."""
    work = daemons.scratch / "journal-maker"
    work.mkdir(exist_ok=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (work / "record.ini").write_text(JOURNAL_INI.format(port=port, directory=work / "out"))
    daemons.start("journal", ["twistd", "-n", "--pidfile=", "tia", "--config", "record.ini"], work, port)
    daemons.stop()  # a graceful stop completes the journal
    (raw,) = (work / "out").glob("*.tia")
    target.parent.mkdir(parents=True, exist_ok=True)
    raw.rename(target)
    raw.with_suffix(".json").rename(target.with_suffix(".json"))


def _run_python(path: Path, cwd: Path, daemons: Daemons) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, path.name], cwd=cwd, env=daemons.env, capture_output=True, text=True,
                          timeout=PYTHON_TIMEOUT, check=False)


MODULE_PROBE = """
import importlib, sys
from fractions import Fraction
from tia.protocol.signals import by_name
from tia.sources.base import ChannelSpec, SourceSpec
module = importlib.import_module(sys.argv[1])
driver = getattr(module, "DRIVER", None)
if driver is not None:
    spec = SourceSpec("s", driver.name, Fraction(100), 4, (ChannelSpec("a", by_name("eeg")),), {})
    source = driver.factory(spec)
    source.start()
    print(source.read(0))
    source.stop()
"""


def run_block(block: Block, daemons: Daemons) -> None:
    if id(block) in _done:
        return
    if "needs" in block.options:
        run_block(BY_NAME[block.options["needs"]], daemons)
    cwd = daemons.scratch / block.options.get("cwd", "")
    cwd.mkdir(parents=True, exist_ok=True)
    setup = block.options.get("setup", "")
    if setup.startswith("journal:"):
        make_journal(cwd / setup.removeprefix("journal:"), daemons)
    server = block.options.get("server", "demo" if block.kind in ("python", "shell") else "none")
    if block.kind in ("python", "shell") and server != "none":
        daemons.ensure(server)
    if block.kind == "shell":
        _run_shell(block, daemons, cwd)
    elif block.kind == "python":
        script = cwd / f"readme_{block.line}.py"
        script.write_text(block.text + "\n", encoding="utf-8")
        result = _run_python(script, cwd, daemons)
        assert result.returncode == 0, f"the example at {block.id} failed:\n{result.stdout}{result.stderr}"
    elif block.kind == "module":
        module = cwd / block.options["file"]
        module.write_text(block.text + "\n", encoding="utf-8")
        result = subprocess.run([sys.executable, "-c", MODULE_PROBE, module.stem], cwd=cwd, env=daemons.env,
                                capture_output=True, text=True, timeout=PYTHON_TIMEOUT, check=False)
        assert result.returncode == 0, f"the module at {block.id} does not work:\n{result.stderr}"
    elif block.kind == "output" and "of" in block.options:
        program = BY_NAME[block.options["of"]]
        daemons.ensure("none")
        script = cwd / f"readme_{program.line}.py"
        script.write_text(program.text + "\n", encoding="utf-8")
        result = _run_python(script, cwd, daemons)
        assert result.returncode != 0, f"{program.id} without a server exited 0:\n{result.stdout}"
        for line in block.text.splitlines():
            assert line.strip() in result.stdout + result.stderr, (line, result.stdout + result.stderr)
    elif block.kind == "ini":
        parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
        text = block.text if block.text.lstrip().startswith("[") else "[section]\n" + block.text
        parser.read_string(text)
    elif block.kind == "toml":
        tomllib.loads(block.text)
    elif block.kind == "skip":
        pytest.skip(block.options.get("reason") or "marked skip without a reason")
    _done.add(id(block))


RUNNABLE = [b for b in BLOCKS if b.kind != "unmarked" and (b.kind != "output" or "of" in b.options)]


@pytest.mark.slow
@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_readme_block(block: Block, daemons: Daemons) -> None:
    run_block(block, daemons)
