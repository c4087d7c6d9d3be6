"""The seed's server API (pytia 0.1.0) on the real Twisted daemon.

Scripts written for pytia keep running with ``pytia`` replaced by ``tia``::

    server = TiAServer(("127.0.0.1", 9000), TiAConnectionHandler)
    server.start([TiASignalConfig(channels=3, sample_rate=50, blocksize=1,
                                  callback=read, id=0, is_master=True, sigtype=TIA_SIG_USER_1)])

What is the same as the seed: the constructor, ``start(signals, single_shot,
subj_id, subj_fname, subj_lname)``, the ``TIA_SIG_*`` values, the validation
messages, and callbacks called with the signal's ``id`` once per packet of
the master signal, returning a flat channel-major list of
``channels * blocksize`` values. ``start`` returns at once; the server runs in
the background.

What differs, and why:

* Serving is done by :class:`tia.server.service.TiAService` (the daemon
  itself): every peer of SPEC.md works, and UDP, server state and graceful
  shutdown come with it. :class:`TiAConnectionHandler` is only a marker.
* The Twisted reactor runs in one background daemon thread, shared by every
  ``TiAServer`` of the process and started by the first ``start``. If the
  program already runs the reactor (in any thread), that reactor is used; a
  program that runs it itself must do so before the first ``start`` (or call
  ``start`` from reactor code), since a running reactor cannot be run again.
  Callbacks run on the reactor thread: like the seed says, they must be quick,
  or every client's stream stalls.
* Binding happens in ``start``, not in the constructor (the signals are only
  known then); a taken port raises :class:`TiAException` there.
  ``server_address`` then holds the real port (useful with port 0).
* ``''`` binds all interfaces, as in the seed. Anything but loopback is
  logged as a warning: the daemon's own default is loopback only.
* TiA requires every periodic signal to send at the master's packet rate. The
  seed ignores the ``sample_rate`` of non-master signals and polls them at the
  master's rate, so here a non-master signal's rate *is* master packet rate x
  its blocksize; a different ``sample_rate`` is logged as a warning.
* Two signals may not share a ``sigtype`` (the seed asks for it, we enforce
  it), the master's type must be periodic, and a signal of an aperiodic type
  (button, joystick, mouse, mouse button, event) has blocksize 1: its callback
  returns one value per channel, or ``None`` for "no change".
* ``single_shot=True``: the server stops when its first control connection
  closes (the seed served one control connection, then stopped listening).
* ``stop()`` (also ``shutdown()`` / ``server_close()`` / leaving a ``with``
  block) stops gracefully; servers still running at interpreter exit are
  stopped the same way.
* Log events of the ``tia`` packages are forwarded to the standard
  :mod:`logging` module (logger names = module names, from the first
  ``TiAServer`` on), so warnings reach a script that never set up Twisted
  logging. A program that also starts Twisted logging sees them twice.
* A callback that raises, or returns the wrong number of values, stops its
  signal (logged as an error); the other signals go on.
"""

from __future__ import annotations

import atexit
import logging
import numbers
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IAddress, IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import ILogObserver, LogEvent, Logger, LogLevel, formatEvent, globalLogPublisher
from twisted.python import threadable
from twisted.python.failure import Failure
from zope.interface import provider

from tia.client.blocking import TiAError
from tia.config import ConfigError, ServerConfig, UDPConfig, validate
from tia.protocol.metainfo import Subject
from tia.protocol.packet import MAX_UDP_PAYLOAD, packet_size
from tia.protocol.signals import SignalType, UnknownSignalType, by_flag
from tia.server.guard import is_loopback
from tia.sources.base import ChannelSpec, SourceError, SourceSpec
from tia.sources.callback import CallbackSource

if TYPE_CHECKING:
    from tia.server.control import ServerControlProtocol
    from tia.server.service import TiAService

__all__ = [
    "TIA_SIG_BP",
    "TIA_SIG_BUTTON",
    "TIA_SIG_ECG",
    "TIA_SIG_EEG",
    "TIA_SIG_EMG",
    "TIA_SIG_EOG",
    "TIA_SIG_EVENT",
    "TIA_SIG_FMRI",
    "TIA_SIG_HR",
    "TIA_SIG_JOYSTICK",
    "TIA_SIG_MOUSE",
    "TIA_SIG_MOUSE_BTN",
    "TIA_SIG_NIRS",
    "TIA_SIG_SENSORS",
    "TIA_SIG_UNDEFINED",
    "TIA_SIG_USER_1",
    "TIA_SIG_USER_2",
    "TIA_SIG_USER_3",
    "TIA_SIG_USER_4",
    "TiAConnectionHandler",
    "TiAException",
    "TiAServer",
    "TiASignalConfig",
]

log = Logger()

# -- signal types: the seed's names and values (flags of TiA 1.0) -----------------

TIA_SIG_EEG: Final = 0x00000001
TIA_SIG_EMG: Final = 0x00000002
TIA_SIG_EOG: Final = 0x00000004
TIA_SIG_ECG: Final = 0x00000008
TIA_SIG_HR: Final = 0x00000010
TIA_SIG_BP: Final = 0x00000020
TIA_SIG_BUTTON: Final = 0x00000040  # aperiodic
TIA_SIG_JOYSTICK: Final = 0x00000080  # aperiodic; sent as "axis"
TIA_SIG_SENSORS: Final = 0x00000100  # sent as "sensor"
TIA_SIG_NIRS: Final = 0x00000200
TIA_SIG_FMRI: Final = 0x00000400
TIA_SIG_MOUSE: Final = 0x00000800  # aperiodic; sent as "keycode"
TIA_SIG_MOUSE_BTN: Final = 0x00001000  # aperiodic
TIA_SIG_USER_1: Final = 0x00010000
TIA_SIG_USER_2: Final = 0x00020000
TIA_SIG_USER_3: Final = 0x00040000
TIA_SIG_USER_4: Final = 0x00080000
TIA_SIG_UNDEFINED: Final = 0x00100000
TIA_SIG_EVENT: Final = 0x00200000  # aperiodic

# One exception for client and server, under the seed's name too.
TiAException = TiAError

START_TIMEOUT = 10.0
# TiAService aborts lingering connections after its own grace period (2 s).
STOP_TIMEOUT = 10.0
MAX_COUNT = 0xFFFF  # channels and blocksize are uint16 on the wire

SignalCallback = Callable[[Any], Any]


# -- configuration objects -------------------------------------------------------


def _signal_type(sigtype: object) -> SignalType:
    if isinstance(sigtype, bool) or not isinstance(sigtype, int):
        raise TiAException(f"sigtype must be one of the TIA_SIG_* constants, got {sigtype!r}")
    try:
        return by_flag(sigtype)
    except UnknownSignalType:
        raise TiAException(f"sigtype 0x{sigtype:x} is not a TiA signal type (use a TIA_SIG_* constant)") from None


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        raise TiAException(f"{what} must be an integer from 1 to {MAX_COUNT}, got {value!r}")
    return value


def _rate(value: object) -> Fraction | None:
    """A positive, finite rate as an exact fraction (0.1 -> 1/10), or None if it is not one."""
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, numbers.Rational):
            rate = Fraction(value)
        elif isinstance(value, numbers.Real):  # repr: 0.1 means 1/10; inf and nan fail here
            rate = Fraction(repr(float(value)))
        else:
            return None
    except (ValueError, OverflowError):
        return None
    return rate if rate > 0 else None


class TiASignalConfig:
    """One signal: its shape, its callback and its TiA type, as the seed describes it.

    ``callback(id)`` returns ``channels * blocksize`` values, channel by
    channel (ch1 s1..sB, ch2 s1..sB, ...); a (channels, blocksize) array is
    accepted too. Attributes keep the seed's names (``master``,
    ``signal_flags``); ``typestr`` is the type name sent in the metainfo.
    """

    def __init__(
        self,
        channels: int,
        sample_rate: float,
        blocksize: int,
        callback: SignalCallback | None,
        id: Any,
        is_master: bool = True,
        sigtype: int = TIA_SIG_USER_1,
    ) -> None:
        signal_type = _signal_type(sigtype)
        self.channels = _count(channels, "channels")
        self.sample_rate = sample_rate
        self.blocksize = _count(blocksize, "blocksize")
        self.id = id
        self.signal_flags = sigtype
        self.typestr = signal_type.name
        self.master = is_master
        if callback is None:
            raise TiAException("Must provide a valid callback method for every signal")
        if not callable(callback):
            raise TiAException(f"callback must be callable, got {callback!r}")
        self.callback: SignalCallback = callback

    @property
    def is_master(self) -> bool:
        return bool(self.master)

    @property
    def sigtype(self) -> int:
        return self.signal_flags

    def __repr__(self) -> str:
        return (
            f"TiASignalConfig(channels={self.channels}, sample_rate={self.sample_rate!r}, "
            f"blocksize={self.blocksize}, id={self.id!r}, is_master={self.is_master}, "
            f"sigtype={self.typestr})"
        )


class TiAConnectionHandler:
    """Marker kept so ``TiAServer(address, TiAConnectionHandler)`` still reads right.

    The seed served each control connection with this class; here the
    daemon's Twisted control protocol (:mod:`tia.server.control`) does, so the
    class has no behaviour and custom handler classes are not supported.
    """


def _source_specs(signals: Sequence[TiASignalConfig]) -> tuple[list[TiASignalConfig], list[SourceSpec]]:
    """Check ``signals`` as the seed does (plus TiA's rules) and describe them as callback sources.

    Returns the signals with the master first, and their specs in that order
    (the daemon takes the first periodic source as its master).
    """
    if isinstance(signals, TiASignalConfig) or not isinstance(signals, Sequence):
        raise TiAException("signals must be a list of TiASignalConfig objects")
    if len(signals) < 1:
        raise TiAException("Must have at least 1 signal!")
    for signal in signals:
        if not isinstance(signal, TiASignalConfig):
            raise TiAException(f"signals must be TiASignalConfig objects, got {signal!r}")
    masters = [signal for signal in signals if signal.master]
    if len(masters) != 1:
        raise TiAException(f'Must have exactly one "Master" signal (found {len(masters)})')
    master = masters[0]
    ordered = [master, *(signal for signal in signals if signal is not master)]

    seen: dict[int, TiASignalConfig] = {}
    for signal in ordered:
        signal_type = _signal_type(signal.signal_flags)
        if signal_type.flag in seen:
            raise TiAException(
                f"two signals have the type {signal_type.name!r} (ids {seen[signal_type.flag].id!r} and "
                f"{signal.id!r}); give every signal its own sigtype"
            )
        seen[signal_type.flag] = signal

    master_type = _signal_type(master.signal_flags)
    if master_type.aperiodic:
        raise TiAException(
            f"the master signal (id {master.id!r}) has the aperiodic type {master_type.name!r}; "
            "the master sets the packet rate, so give it a periodic type (eeg, sensors, user_1, ...)"
        )
    master_rate = _rate(master.sample_rate)
    if master_rate is None:
        raise TiAException(f"the master's sample_rate must be a positive number, got {master.sample_rate!r}")
    master_blocksize = _count(master.blocksize, "blocksize")
    packet_rate = master_rate / master_blocksize

    specs = []
    for signal in ordered:
        signal_type = _signal_type(signal.signal_flags)
        channels = _count(signal.channels, "channels")
        blocksize = _count(signal.blocksize, "blocksize")
        if signal_type.aperiodic and blocksize != 1:
            raise TiAException(
                f"signal {signal.id!r} has the aperiodic type {signal_type.name!r} and blocksize "
                f"{blocksize}; aperiodic signals carry one value per channel (blocksize=1)"
            )
        rate = packet_rate * blocksize
        if signal is not master and _rate(signal.sample_rate) != rate:
            log.warn(
                "signal {id!r} ({type}): sample_rate {given!r} ignored; like every non-master signal it "
                "is polled once per master packet, so it runs at {rate:g} Hz (blocksize {blocksize})",
                id=signal.id, type=signal_type.name, given=signal.sample_rate, rate=float(rate),
                blocksize=blocksize,
            )
        if not callable(signal.callback):
            raise TiAException(f"signal {signal.id!r}: callback must be callable, got {signal.callback!r}")
        specs.append(
            SourceSpec(
                name=signal_type.name,
                driver="callback",
                sampling_rate=rate,
                block_size=blocksize,
                channels=tuple(ChannelSpec(f"channel{n}", signal_type) for n in range(1, channels + 1)),
                options={"callable": signal.callback, "argument": signal.id},
            )
        )
    return ordered, specs


def _strports_quote(text: str) -> str:
    """Escape a value for a strports description (IPv6 addresses contain colons)."""
    return text.replace("\\", "\\\\").replace(":", "\\:")


def _udp_config(specs: Sequence[SourceSpec]) -> UDPConfig:
    """UDP unicast when every packet fits one datagram; the seed had no UDP to keep working."""
    largest = packet_size([(len(spec.channels), spec.block_size) for spec in specs])
    return UDPConfig(mode="unicast" if largest <= MAX_UDP_PAYLOAD else "off")


# -- the reactor thread --------------------------------------------------------------


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class _ReactorThread:
    """Runs the global reactor in one daemon thread, started on first use and kept for the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.thread: threading.Thread | None = None

    @property
    def owned(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def ensure_running(self) -> None:
        with self._lock:
            reactor = _reactor()
            if self.owned or reactor.running:
                return  # ours, or the application's (any thread): use it
            started = threading.Event()
            failed: list[BaseException] = []

            def run() -> None:
                try:
                    reactor.run(installSignalHandlers=False)
                except BaseException as error:
                    failed.append(error)
                finally:
                    started.set()

            reactor.callWhenRunning(started.set)
            thread = threading.Thread(target=run, name="tia-reactor", daemon=True)
            thread.start()
            if not started.wait(START_TIMEOUT):
                raise TiAException(f"the Twisted reactor did not start within {START_TIMEOUT:g} s")
            if failed:
                raise TiAException(
                    f"cannot run the Twisted reactor: {failed[0]!r} (a reactor that has stopped cannot be "
                    "restarted in the same process)"
                ) from failed[0]
            self.thread = thread
            atexit.register(_stop_at_exit)

    def stop(self) -> None:
        thread = self.thread
        if thread is None or not thread.is_alive():
            return
        _reactor().callFromThread(_reactor().stop)
        thread.join(STOP_TIMEOUT)


_REACTOR_THREAD = _ReactorThread()
_RUNNING: set[TiAServer] = set()
_RUNNING_LOCK = threading.Lock()


def _in_reactor(function: Callable[[], object], timeout: float) -> object:
    """Run ``function`` on the reactor thread and wait for its result (a Deferred's, if it returns one).

    On the reactor thread itself nothing can be waited for: ``function`` runs
    at once and a Deferred it returns is handed back unwaited.
    """
    if threadable.isInIOThread():
        return function()
    outcome: queue.Queue[object] = queue.Queue(maxsize=1)

    def call() -> None:
        maybeDeferred(function).addBoth(outcome.put)

    _reactor().callFromThread(call)
    try:
        result = outcome.get(timeout=timeout)
    except queue.Empty:
        raise TiAException(
            f"the reactor thread did not answer within {timeout:g} s (is a signal callback blocking it?)"
        ) from None
    if isinstance(result, Failure):
        result.raiseException()
    return result


def _stop_at_exit() -> None:
    """Interpreter exit: stop running servers gracefully, then our reactor thread.

    If the reactor does not answer (a callback blocks it), give up at once:
    the daemon thread dies with the interpreter anyway.
    """
    with _RUNNING_LOCK:
        servers = list(_RUNNING)
    for server in servers:
        try:
            server.stop()
        except TiAException as error:
            log.warn("TiAServer on {address} did not stop cleanly: {error}", address=server.server_address,
                     error=error)
            return
    _REACTOR_THREAD.stop()


# -- log forwarding ----------------------------------------------------------------

_STDLIB_LEVELS: Final = {
    LogLevel.debug: logging.DEBUG,
    LogLevel.info: logging.INFO,
    LogLevel.warn: logging.WARNING,
    LogLevel.error: logging.ERROR,
    LogLevel.critical: logging.CRITICAL,
}


@provider(ILogObserver)
def _forward_to_stdlib(event: LogEvent) -> None:
    """Hand ``tia.*`` events to :mod:`logging`, whose defaults show warnings on stderr."""
    namespace = str(event.get("log_namespace", ""))
    if namespace != "tia" and not namespace.startswith("tia."):
        return
    text = formatEvent(event)
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        text = f"{text}\n{failure.getTraceback()}"
    logging.getLogger(namespace).log(_STDLIB_LEVELS.get(event.get("log_level"), logging.INFO), text)


_forwarding_lock = threading.Lock()
_forwarding = False


def _forward_logs_once() -> None:
    global _forwarding
    with _forwarding_lock:
        if not _forwarding:
            globalLogPublisher.addObserver(_forward_to_stdlib)
            _forwarding = True


# -- the server ----------------------------------------------------------------------


class _WatchFirstConnection(Factory):
    """Wraps the control factory to learn when its first connection closes (single_shot)."""

    noisy = False

    def __init__(self, inner: IProtocolFactory, on_closed: Callable[[], None]) -> None:
        self.inner = inner
        self._on_closed: Callable[[], None] | None = on_closed

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        protocol: ServerControlProtocol | None = self.inner.buildProtocol(addr)  # type: ignore[assignment,arg-type]
        on_closed, self._on_closed = self._on_closed, None
        if protocol is not None and on_closed is not None:
            protocol.closed.addCallback(lambda _: on_closed())
        return protocol


def _when_done(deferred: Deferred[None]) -> Deferred[None]:
    """A new Deferred firing (with None) when ``deferred`` fires, leaving its result alone."""
    waiter: Deferred[None] = Deferred()

    def relay(result: object) -> object:
        waiter.callback(None)
        return result

    deferred.addBoth(relay)
    return waiter


@dataclass
class _Run:
    """One ``start``: its service and, once stopping began, the Deferred of that stop.

    ``stopping`` is only touched on the reactor thread, so a stop starts once
    whoever asks (``stop()``, single shot, interpreter exit).
    """

    service: TiAService
    address: tuple[str, int]
    stopping: Deferred[None] | None = None

    def stop_on_reactor(self) -> Deferred[None]:
        if self.stopping is None:
            log.info("TiAServer on {host}:{port} stopping", host=self.address[0], port=self.address[1])
            self.stopping = self.service.stopService()
        return _when_done(self.stopping)


class TiAServer:
    """The seed's server: bind an address, ``start(signals)``, stream until ``stop()``.

    ``server_address`` is ``(host, port)``; ``''`` means all interfaces, as
    in the seed. ``handler_class`` is accepted for the seed's signature and
    ignored (see :class:`TiAConnectionHandler`); so is ``bind_and_activate``:
    the port is bound by ``start``.
    """

    def __init__(
        self,
        server_address: tuple[str, int],
        handler_class: type[Any] = TiAConnectionHandler,
        bind_and_activate: bool = True,
    ) -> None:
        _forward_logs_once()
        try:
            host, port = server_address
        except (TypeError, ValueError):
            raise TiAException(f"server_address must be (host, port), got {server_address!r}") from None
        if not isinstance(host, str):
            raise TiAException(f"the host must be a string ('' for all interfaces), got {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
            raise TiAException(f"the port must be an integer from 0 to 65535, got {port!r}")
        if handler_class is not TiAConnectionHandler:
            log.warn(
                "handler class {handler!r} ignored: the daemon's control protocol serves every connection",
                handler=handler_class,
            )
        self.server_address: tuple[str, int] = (host, port)
        self.RequestHandlerClass = handler_class
        self.signals: list[TiASignalConfig] = []
        self.subject: tuple[str, str, str] = ("", "", "")
        self.master_sample_rate: float | None = None
        self.single_shot = False
        self._start_lock = threading.Lock()
        self._run: _Run | None = None

    @property
    def running(self) -> bool:
        """True from a successful ``start`` until stopping begins (``stop()``, single shot)."""
        run = self._run
        return run is not None and run.stopping is None

    def start(
        self,
        signals: Sequence[TiASignalConfig],
        single_shot: bool = False,
        subj_id: str = "subject0",
        subj_fname: str = "ABC",
        subj_lname: str = "DEF",
    ) -> None:
        """Check the signals, bind, and stream in the background; returns once the port listens.

        Raises :class:`TiAException` for invalid signals (before any thread
        starts) and when the address cannot be bound.
        """
        ordered, specs = _source_specs(signals)
        host, port = self.server_address
        interface = host or "0.0.0.0"
        subject = Subject(str(subj_id), str(subj_fname), str(subj_lname))
        config = ServerConfig(
            sources=tuple(specs),
            subject=subject,
            control=f"tcp:{port}:interface={_strports_quote(interface)}",
            udp=_udp_config(specs),
        )
        try:
            validate(config)
            sources = [CallbackSource(spec) for spec in specs]
        except (ConfigError, SourceError) as error:
            raise TiAException(str(error)) from None

        with self._start_lock:
            if self.running:
                raise TiAException(f"this TiAServer is already running on {self.server_address}")
            _REACTOR_THREAD.ensure_running()
            run = _in_reactor(
                lambda: self._start_on_reactor(config, sources, interface, port, single_shot), START_TIMEOUT
            )
            assert isinstance(run, _Run)
            self._run = run
            self.server_address = run.address
            self.signals = ordered
            self.subject = (subject.id, subject.first_name, subject.surname)
            self.master_sample_rate = ordered[0].sample_rate
            self.single_shot = single_shot
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        if not is_loopback(interface):
            log.warn(
                "TiAServer listens on {host}:{port}, beyond loopback: any host that can reach this machine "
                "can read the signals; pass ('127.0.0.1', port) to keep them local",
                host=interface, port=run.address[1],
            )
        log.info("TiAServer started on {host}:{port}", host=interface, port=run.address[1])
        log.info("TiAServer configured with {count} signals", count=len(ordered))

    def _start_on_reactor(
        self, config: ServerConfig, sources: Sequence[CallbackSource], interface: str, port: int, single_shot: bool
    ) -> _Run:
        from tia.daemon import build_service
        from tia.server.listener import ListenError

        try:
            service = build_service(config, sources=sources, warn_exposure=False)  # start() warns, in its words
        except ValueError as error:  # the stream hub's refusals
            raise TiAException(str(error)) from None
        run: _Run | None = None
        if single_shot:
            watched = _WatchFirstConnection(service.control.factory, lambda: self._single_shot_over(run))
            service.control.factory = watched
        try:
            service.bind()  # the control port, or an error now
        except ListenError as error:
            raise TiAException(f"cannot listen on {interface}:{port}: {error.reason}") from None
        service.startService()
        run = _Run(service, (interface, service.control_port))
        return run

    def _single_shot_over(self, run: _Run | None) -> None:
        """Reactor thread: the first control connection of a single-shot server closed."""
        if run is None or run.stopping is not None:
            return
        with _RUNNING_LOCK:
            _RUNNING.discard(self)
        log.info("single-shot TiAServer: its client left")
        run.stop_on_reactor()

    def stop(self) -> None:
        """Graceful stop: state clients hear ServerStateShutdown, connections close, the port is freed.

        Blocks until done, except on the reactor thread, which cannot wait.
        Idempotent; the shared reactor thread keeps running for other servers.
        """
        run = self._run
        with _RUNNING_LOCK:
            _RUNNING.discard(self)
        if run is not None:
            _in_reactor(run.stop_on_reactor, STOP_TIMEOUT)

    # socketserver's names for the same thing
    shutdown = stop
    server_close = stop

    def __enter__(self) -> TiAServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<TiAServer {self.server_address[0]}:{self.server_address[1]} {state}>"
