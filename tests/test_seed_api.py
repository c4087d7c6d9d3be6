"""The seed's server API (``tia.seed``): pytia 0.1.0 scripts run on the real daemon.

Every test that starts a ``TiAServer`` does it in a child Python process: the
server runs the global Twisted reactor in a background thread, and a reactor
cannot run twice in one process, while the trial tests of this suite run it
in the main thread of the pytest process. Only the validation tests, which
fail before any thread starts, run in-process (and check that none started).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest
from support import free_port
from twisted.logger import globalLogPublisher

import tia
import tia.seed
from tia.client.blocking import TiAError
from tia.protocol.signals import by_flag
from tia.seed import (
    TIA_SIG_BUTTON,
    TIA_SIG_EEG,
    TIA_SIG_SENSORS,
    TIA_SIG_USER_1,
    TiAConnectionHandler,
    TiAException,
    TiAServer,
    TiASignalConfig,
)

SCRIPT_TIMEOUT = 30

# The "Basic example" of the seed's README (pytia 0.1.0 on PyPI), server and client
# parts in one script. Changes, and nothing else:
#  1. `from pytia import` -> `from tia import` in both import lines;
#  2. indentation restored (the PyPI page lost it);
#  3. `import random` and `from tia import TIA_SIG_USER_1` added: the README uses both
#     without importing them;
#  4. each comment-only `# handle error` block got `raise SystemExit(1)` so that it
#     is valid Python (and fails the test instead of carrying on);
#  5. the port 9000 (twice) is replaced by a free port when the test runs.
README_EXAMPLE = """\
import random
from tia import TIA_SIG_USER_1

from tia import TiAServer, TiAConnectionHandler, TiASignalConfig
server = TiAServer(('', 9000), TiAConnectionHandler)

def sig_callback(id):
    return [random.uniform(-10, 10) for x in range(3)]
# create a 50Hz, 3 channel signal with 1 sample per channel per packet.
# "signal_callback" is a callable the server will call to retrieve data for
# this signal. You shouldn't do long-running work in it!
server.start([TiASignalConfig(channels=3, sample_rate=50, blocksize=1, callback=sig_callback, id=0, is_master=True, sigtype=TIA_SIG_USER_1)])

from tia import TiAClient

server_address = '127.0.0.1'
client = TiAClient(server_address, 9000)
if not client.connect():
    raise SystemExit(1)  # handle error

# TiA clients should start by checking the server protocol version matches their own...
if not client.cmd_check_protocol_version():
    client.disconnect()
    raise SystemExit(1)  # handle error

# to begin streaming data, a client should request a data connection from the
# server. The server will send back a port number and the client then connects
# to that port to obtain the connection.
status, dport = client.cmd_get_data_connection_tcp()
if not status:
    client.disconnect()
    raise SystemExit(1)  # handle error

if not client.start_streaming_data_tcp(server_address, dport):
    client.disconnect()
    raise SystemExit(1)  # handle error

# now we can retrieve the data being streamed from the server
# the get_data method returns a list of packets. The number of packets can
# vary from call to call depending on when you call it and the number of
# signals the server is sending.
packets = client.get_data()

# each packet is an instance of TiAPacket. It contains:
# - packet.signals (a list of the data for each signal in the packet)
# - packet.blocksizes (a list of the block sizes for each signal)
# - packet.channels (a list of the number of channels in each signal)
# - packet.packet_number (sequence number)
# - packet.timestamp (timestamp set on transmission)
# - packet.packet_id (currently set to the same as sequence number)

# example of extracting some data from a packet
if len(packets) > 0:
    packet = packets[0]

    print('Packet contains %d signals' % (len(packet.signals)))
    print('Number/timestamp/ID: ', packet.packet_number, packet.timestamp, packet.packet_id)
    print('Channel counts: ', packet.channels)

    # access some data by channel
    data = packet.get_channel(0, 1) # channel 1 from signal 0
    print('Signal 0/channel 1 = ', data)

    # or just get all the data from a selected signal
    data = packet.get_channel(0)
    print('Signal 0 = ', data)


# disconnect from the server when done streaming
client.stop_streaming_data()
client.disconnect()
"""  # noqa: E501 - the README's own long line


def run_script(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (its own reactor) and require exit status 0."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=SCRIPT_TIMEOUT, check=False
    )
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


# Shared by the child scripts: imports, a signal list and a few helpers.
PRELUDE = textwrap.dedent(
    """\
    import itertools, logging, random, socket, threading, time
    from tia import (TiAServer, TiAConnectionHandler, TiASignalConfig, TiAException, TiAClient,
                     TIA_SIG_USER_1, TIA_SIG_SENSORS, TIA_SIG_BUTTON, TIA_SIG_EEG)

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logging.getLogger("tia").addHandler(Keep())
    logging.getLogger("tia").setLevel(logging.INFO)

    def simple():
        return [TiASignalConfig(2, 100, 2, lambda id: [1.0, 2.0, 3.0, 4.0], id=0, sigtype=TIA_SIG_EEG)]

    def stream(port, count):
        client = TiAClient("127.0.0.1", port, timeout=5)
        assert client.connect(), client.last_error
        assert client.cmd_check_protocol_version()
        assert client.cmd_get_metainfo()
        ok, dport = client.cmd_get_data_connection_tcp()
        assert ok
        assert client.start_streaming_data_tcp("127.0.0.1", dport)
        packets = []
        while len(packets) < count:
            packets.extend(client.get_data())
        return client, packets

    def refused(port, within=5.0):
        # polls (a closed port announces nothing to another process), at most ``within`` seconds
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except ConnectionRefusedError:
                return True
            except ConnectionResetError:
                pass  # accepted just as the port closed: try again
            time.sleep(0.02)
        return False
    """
)


# -- (1) the README example, as a script ------------------------------------------


def test_readme_example_runs_with_only_the_import_changed() -> None:
    port = free_port()
    script = README_EXAMPLE.replace("9000", str(port))
    assert script.count(str(port)) == 2
    result = run_script(script)
    lines = result.stdout.splitlines()
    assert lines[0] == "Packet contains 1 signals"
    number, timestamp, packet_id = (int(x) for x in lines[1].split(":", 1)[1].split())
    assert number == 0 and packet_id >= 0 and timestamp == packet_id * 20_000  # 50 packets/s
    assert lines[2] in ("Channel counts:  [3]", "Channel counts:  (3,)")  # list here, tuple in the seed
    assert lines[3].startswith("Signal 0/channel 1 =  [")
    assert lines[4].startswith("Signal 0 =  [")
    values = [float(x) for x in lines[4].split("[", 1)[1].rstrip("]").split()]
    assert len(values) == 3 and all(-10 <= v <= 10 for v in values)
    # '' binds every interface, as in the seed, and says so
    assert "beyond loopback" in result.stderr


# -- (2) streaming through the blocking client --------------------------------------


def test_two_signals_stream_with_their_ids_and_values() -> None:
    code = PRELUDE + textwrap.dedent(
        """\
        threads = set()

        def user(id):
            assert id == 0
            threads.add(threading.current_thread().name)
            return [random.uniform(-10, 10) for _ in range(3)]

        counter = itertools.count()

        def counting(id):
            assert id == "counter"
            n = next(counter)  # call n is master tick n: 2 channels x 2 samples, channel-major
            return [2 * n, 2 * n + 1, 1000 + 2 * n, 1000 + 2 * n + 1]

        presses = itertools.count()

        def button(id):
            return [7.0] if next(presses) % 5 == 0 else None  # aperiodic: None = no change

        signals = [
            TiASignalConfig(2, 1000, 2, counting, id="counter", is_master=False, sigtype=TIA_SIG_SENSORS),
            TiASignalConfig(3, 50, 1, user, id=0, is_master=True, sigtype=TIA_SIG_USER_1),
            TiASignalConfig(1, 50, 1, button, id="button", is_master=False, sigtype=TIA_SIG_BUTTON),
        ]
        given = list(signals)
        server = TiAServer(("127.0.0.1", 0), TiAConnectionHandler)
        assert not server.running
        server.start(signals, subj_id="S7", subj_fname="Ada", subj_lname="Lovelace")
        assert signals == given and server.signals[0].is_master  # master first, caller's list untouched
        host, port = server.server_address
        assert host == "127.0.0.1" and port > 0 and server.running

        client, packets = stream(port, 15)
        meta = client.metainfo
        assert [s.type.name for s in meta.signals] == ["button", "sensor", "user1"]
        assert (meta.master_sampling_rate, meta.master_block_size) == (50, 1)
        sensor = meta.signal("sensor")
        assert (sensor.sampling_rate, sensor.block_size, sensor.labels) == (100, 2, ("channel1", "channel2"))
        assert meta.signal("user1").labels == ("channel1", "channel2", "channel3")
        assert (meta.subject.id, meta.subject.first_name, meta.subject.surname) == ("S7", "Ada", "Lovelace")

        assert [p.packet_number for p in packets] == list(range(len(packets)))
        first = packets[0].packet_id
        assert [p.packet_id for p in packets] == list(range(first, first + len(packets)))
        for p in packets:
            n = p.packet_id
            has_button = n % 5 == 0
            assert p.types == (["button"] if has_button else []) + ["sensor", "user1"], (n, p.types)
            assert p.timestamp == n * 20_000
            i = p.types.index("sensor")
            assert (p.channels[i], p.blocksizes[i]) == (2, 2)
            assert p.signals[i].tolist() == [2 * n, 2 * n + 1, 1000 + 2 * n, 1000 + 2 * n + 1]
            assert p.get_channel(i, 1).tolist() == [1000 + 2 * n, 1000 + 2 * n + 1]
            user_values = p.signals[p.types.index("user1")]
            assert len(user_values) == 3 and all(-10 <= v <= 10 for v in user_values)
            if has_button:
                assert p.signals[0].tolist() == [7.0]
        assert threads == {"tia-reactor"}, threads

        # a second server shares the reactor thread; stopping it leaves the first alone
        other = TiAServer(("127.0.0.1", 0), TiAConnectionHandler)
        other.start(simple())
        other_client, other_packets = stream(other.server_address[1], 3)
        assert other_packets[0].types == ["eeg"] and other_packets[0].signals[0].tolist() == [1, 2, 3, 4]
        other.stop()
        assert refused(other.server_address[1])
        more = client.get_data()
        assert more and more[0].packet_number == len(packets)
        other_client.disconnect()
        assert threading.active_count() == 2  # main + the one reactor thread

        assert client.stop_streaming_data()
        client.disconnect()
        server.stop()
        assert not server.running and refused(port)
        server.stop()  # idempotent
        server.start(simple())  # and startable again, on the same port
        assert server.server_address == ("127.0.0.1", port)
        client, packets = stream(port, 2)
        client.disconnect()
        server.shutdown()

        messages = [r.getMessage() for r in records if r.levelno == logging.WARNING]
        assert any("sample_rate 1000 ignored" in m and "100 Hz" in m for m in messages), messages
        assert not any("beyond loopback" in m for m in messages), messages
        assert any("TiAServer started on 127.0.0.1" in r.getMessage() for r in records)
        print("OK")
        """
    )
    assert run_script(code).stdout.strip() == "OK"


def test_single_shot_stops_when_the_first_client_leaves() -> None:
    code = PRELUDE + textwrap.dedent(
        """\
        server = TiAServer(("127.0.0.1", 0), TiAConnectionHandler)
        server.start(simple(), single_shot=True)
        port = server.server_address[1]
        client, packets = stream(port, 3)
        assert server.running
        assert client.stop_streaming_data()
        client.disconnect()
        assert refused(port)
        assert not server.running
        server.stop()  # waits for the stop under way, then nothing to do
        print("OK")
        """
    )
    assert run_script(code).stdout.strip() == "OK"


def test_a_reactor_run_by_the_application_is_used() -> None:
    code = PRELUDE + textwrap.dedent(
        """\
        import tia.seed
        from twisted.internet import reactor, threads

        running = threading.Event()
        reactor.callWhenRunning(running.set)
        app = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False}, name="app-reactor")
        app.start()
        assert running.wait(10)
        names = set()

        def master(id):
            names.add(threading.current_thread().name)
            return [0.5]

        signals = [TiASignalConfig(1, 20, 1, master, id=0)]
        from_main = TiAServer(("127.0.0.1", 0), TiAConnectionHandler)
        from_main.start(signals)
        in_reactor = TiAServer(("127.0.0.1", 0), TiAConnectionHandler)
        threads.blockingCallFromThread(reactor, in_reactor.start, signals)  # start from reactor code
        for server in (from_main, in_reactor):
            client, packets = stream(server.server_address[1], 2)
            assert packets[0].signals[0].tolist() == [0.5]
            client.disconnect()
        assert names == {"app-reactor"} and tia.seed._REACTOR_THREAD.thread is None
        from_main.stop()
        threads.blockingCallFromThread(reactor, in_reactor.stop)  # cannot wait there, must not hang
        assert refused(from_main.server_address[1]) and refused(in_reactor.server_address[1])
        reactor.callFromThread(reactor.stop)
        app.join(5)
        assert not app.is_alive()
        print("OK")
        """
    )
    assert run_script(code).stdout.strip() == "OK"


# -- (4) binding errors -----------------------------------------------------------------


def test_port_in_use_raises_and_the_process_can_still_serve() -> None:
    code = PRELUDE + textwrap.dedent(
        """\
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        server = TiAServer(("127.0.0.1", port), TiAConnectionHandler)
        try:
            server.start(simple())
        except TiAException as error:
            assert f"cannot listen on 127.0.0.1:{port}" in str(error), error
        else:
            raise SystemExit("start on a taken port did not raise")
        assert not server.running
        other = TiAServer(("127.0.0.1", 0), TiAConnectionHandler)
        other.start(simple())
        client, packets = stream(other.server_address[1], 1)
        client.disconnect()
        print("OK")
        """
    )
    assert run_script(code).stdout.strip() == "OK"


# -- (3) validation, in-process: nothing may start ---------------------------------------


def callback(id: object) -> list[float]:
    return [0.0]


def signal(is_master: bool = True, sigtype: int = TIA_SIG_USER_1, **overrides: object) -> TiASignalConfig:
    arguments: dict[str, object] = {"channels": 1, "sample_rate": 10, "blocksize": 1, "callback": callback, "id": 0}
    arguments.update(overrides)
    return TiASignalConfig(is_master=is_master, sigtype=sigtype, **arguments)  # type: ignore[arg-type]  # bad values too


@pytest.fixture
def no_reactor_thread() -> Iterator[None]:
    """The test must not start the reactor thread; the log forwarding it installs is undone."""
    yield None
    assert tia.seed._REACTOR_THREAD.thread is None
    assert "tia-reactor" not in {t.name for t in threading.enumerate()}
    if tia.seed._forwarding:
        globalLogPublisher.removeObserver(tia.seed._forward_to_stdlib)
        tia.seed._forwarding = False


@pytest.mark.parametrize(
    ("signals", "message"),
    [
        ([], "Must have at least 1 signal!"),
        ([signal(False), signal(False, TIA_SIG_EEG)], 'Must have exactly one "Master" signal (found 0)'),
        ([signal(True), signal(True, TIA_SIG_EEG)], 'Must have exactly one "Master" signal (found 2)'),
        ([signal(True), signal(False)], "two signals have the type 'user1'"),
        ([signal(True, TIA_SIG_BUTTON)], "the master signal (id 0) has the aperiodic type 'button'"),
        ([signal(True), signal(False, TIA_SIG_BUTTON, blocksize=2)], "aperiodic signals carry one value"),
        ([signal(True, sample_rate=0)], "the master's sample_rate must be a positive number"),
        ([signal(True, sample_rate=float("nan"))], "the master's sample_rate must be a positive number"),
    ],
)
def test_start_refuses_invalid_signals(
    signals: list[TiASignalConfig], message: str, no_reactor_thread: None
) -> None:
    server = TiAServer(("127.0.0.1", 0), TiAConnectionHandler)
    with pytest.raises(TiAException) as raised:
        server.start(signals)
    assert message in str(raised.value)
    assert not server.running


def test_signal_config_checks_like_the_seed(no_reactor_thread: None) -> None:
    with pytest.raises(TiAException, match="Must provide a valid callback method for every signal"):
        TiASignalConfig(channels=3, sample_rate=50, blocksize=1, callback=None, id=0)
    with pytest.raises(TiAException, match="not a TiA signal type"):
        signal(sigtype=0x3)
    with pytest.raises(TiAException, match="channels must be an integer"):
        signal(channels=0)
    with pytest.raises(TiAException, match="blocksize must be an integer"):
        signal(blocksize=1.5)
    config = TiASignalConfig(channels=3, sample_rate=50, blocksize=1, callback=callback, id="a")
    assert (config.master, config.signal_flags, config.typestr) == (True, TIA_SIG_USER_1, "user1")
    assert (config.channels, config.sample_rate, config.blocksize, config.id) == (3, 50, 1, "a")
    assert by_flag(TiASignalConfig(1, 9, 1, callback, 0, False, TIA_SIG_SENSORS).sigtype).name == "sensor"


def test_server_address_is_checked(no_reactor_thread: None) -> None:
    with pytest.raises(TiAException, match="port must be an integer"):
        TiAServer(("127.0.0.1", 70000), TiAConnectionHandler)
    with pytest.raises(TiAException, match="server_address must be"):
        TiAServer(9000, TiAConnectionHandler)  # type: ignore[arg-type]  # the wrong type under test
    server = TiAServer(("", 9000), TiAConnectionHandler)
    assert server.server_address == ("", 9000) and not server.running  # nothing bound before start()


# -- names ---------------------------------------------------------------------------------


def test_names_and_values_are_the_seeds() -> None:
    import pytia

    seed_names = {name for name in dir(pytia) if name.startswith("TIA_SIG_") and name != "TIA_SIG_NAMES"}
    assert seed_names
    for name in seed_names:
        assert getattr(tia, name) == getattr(pytia, name) == getattr(tia.seed, name), name
        by_flag(getattr(tia, name))  # a type TiA defines
    assert tia.TiAException is TiAError is TiAException
    assert tia.TiAServer is TiAServer and tia.TiASignalConfig is TiASignalConfig
    assert tia.TiAConnectionHandler is TiAConnectionHandler
    assert isinstance(tia.__all__, list)  # a lazily made list
    assert set(tia.seed.__all__) <= set(tia.__all__)
