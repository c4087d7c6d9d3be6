"""The stream hub: one master tick -> one ``Tick`` -> every subscriber.

Each tick the hub reads every source once, assembles the signals in wire
order, encodes the body once (``BodyLayout``, computed when the hub is
built) and hands the same immutable ``Tick`` to every subscriber. The hub
also owns what the sources' health is: a source that fails, finishes or
(device-clocked) has no complete block is handled here, by its policy, and
counted where ``source_health`` shows it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt
from twisted.logger import Logger

from tia.protocol.metainfo import MetaInfo, SignalInfo, Subject
from tia.protocol.packet import BodyLayout, SampleArray, SignalShape
from tia.protocol.signals import SignalType
from tia.server.tick import Subscriber, Subscribers, Tick
from tia.sources.base import IDeviceClockedSource, ISource, SourceFinished, as_block

log = Logger()

__all__ = ["HubError", "SourceHealth", "StreamHub"]

# A catch-up after a stalled reactor reaches the subscribers in batches of at most this many
# bytes of bodies, so a long stall neither holds all its ticks in memory at once nor hides a
# slow client from its backlog for the whole burst.
BATCH_BYTES = 64 * 1024

SOURCE_STATES = ("streaming", "waiting", "zero-filling", "failed", "finished")
_STOPPED = frozenset({"failed", "finished"})  # its signals are no longer sent


class HubError(ValueError):
    """Sources that cannot be streamed together."""


@dataclass(frozen=True)
class SourceHealth:
    """How one source is doing, for /status, /metrics and ``tia monitor``.

    ``state``: ``streaming``; ``waiting`` (device-clocked, no complete block at
    the last tick: the signal was absent, its samples go out later);
    ``zero-filling`` (failed, zeros sent, ``on_error = zero-fill``);
    ``failed`` or ``finished`` (its signals are no longer sent).
    ``missed_blocks``: ticks a device-clocked source had no complete block;
    ``overflow_samples``: samples its buffer dropped (over ``max_latency``);
    ``rate_error_ppm``: its measured rate against the nominal one (device-clocked
    sources, once enough data is in; else None).
    """

    name: str
    driver: str
    state: str
    missed_blocks: int = 0
    overflow_samples: int = 0
    rate_error_ppm: float | None = None


class _SourceState:
    """One source, what the hub knows of it, and its block of the tick being produced."""

    __slots__ = ("block", "device", "missed", "source", "state")

    def __init__(self, source: ISource) -> None:
        self.source = source
        # ISource declares device_clocked; plugins written before it did are computed on demand.
        self.device: IDeviceClockedSource | None = None
        if getattr(source, "device_clocked", False):
            if not IDeviceClockedSource.providedBy(source):
                raise HubError(
                    f"source [{source.spec.name}] says device_clocked = True but does not provide "
                    "IDeviceClockedSource (its metrics())"
                )
            self.device = source
        self.state = "streaming"  # one of SOURCE_STATES
        self.missed = 0
        self.block: SampleArray | None = None

    def health(self) -> SourceHealth:
        spec = self.source.spec
        overflow, ppm = 0, None
        if self.device is not None:
            metrics = self.device.metrics()
            overflow = int(metrics.get("dropped") or 0)
            rate_error = metrics.get("rate_error_ppm")
            ppm = None if rate_error is None else float(rate_error)
        return SourceHealth(spec.name, spec.driver, self.state, self.missed, overflow, ppm)


@dataclass
class _SignalRoute:
    """Where one signal's channels come from: (source, rows of its block or None for all)."""

    type: SignalType
    parts: list[tuple[_SourceState, npt.NDArray[np.intp] | None]]


class StreamHub:
    """Produces the ticks of one server's sources and fans each out to the subscribers.

    ``on_fatal(reason)`` is called once when a source asks for the server to
    stop (``on_error = stop-server``, or a replay's ``on_end = stop-server``).
    ``sample_order`` is the wire layout of samples inside a signal
    (``tia.protocol.packet.SAMPLE_ORDERS``).
    """

    def __init__(
        self,
        sources: Sequence[ISource],
        subject: Subject | None = None,
        on_fatal: Callable[[str], None] | None = None,
        sample_order: str = "channel-major",
    ) -> None:
        periodic = [s for s in sources if not s.spec.aperiodic]
        if not periodic:
            raise HubError("at least one periodic source is needed to set the packet rate")
        self.master = periodic[0].spec
        self.packet_rate: Fraction = self.master.packet_rate
        self._states = tuple(_SourceState(source) for source in sources)
        self._on_fatal = on_fatal
        self._fatal_sent = False
        self._subscribers = Subscribers()
        self.ticks_sent = 0

        routes: dict[int, _SignalRoute] = {}
        labels: dict[int, list[str]] = {}
        rates: dict[int, tuple[Fraction, int]] = {}
        for state in self._states:
            spec = state.source.spec
            if spec.packet_rate != self.packet_rate and not spec.aperiodic:
                raise HubError(
                    f"source [{spec.name}] sends {spec.packet_rate} packets/s, "
                    f"the master [{self.master.name}] {self.packet_rate}"
                )
            by_type: dict[int, list[int]] = {}
            for row, channel in enumerate(spec.channels):
                by_type.setdefault(channel.type.flag, []).append(row)
                labels.setdefault(channel.type.flag, []).append(channel.label)
            for flag, rows in by_type.items():
                shape = (spec.sampling_rate, spec.block_size)
                if rates.setdefault(flag, shape) != shape:
                    raise HubError(f"signal type 0x{flag:x} is fed at two rates or block sizes")
                route = routes.setdefault(flag, _SignalRoute(spec.channels[rows[0]].type, []))
                whole = rows == list(range(len(spec.channels)))
                route.parts.append((state, None if whole else np.array(rows, dtype=np.intp)))
        self._routes = tuple(routes[flag] for flag in sorted(routes))
        self.metainfo = MetaInfo(
            float(self.master.sampling_rate),
            self.master.block_size,
            tuple(
                SignalInfo(route.type, float(rates[route.type.flag][0]), rates[route.type.flag][1],
                           tuple(labels[route.type.flag]))
                for route in self._routes
            ),
            subject or Subject(),
        )
        self.layout = BodyLayout(
            [SignalShape(s.flag, s.num_channels, s.block_size) for s in self.metainfo.signals], sample_order
        )
        self.max_packet_size = self.layout.max_packet_size
        self._us_numerator = 1_000_000 * self.packet_rate.denominator
        self._us_denominator = self.packet_rate.numerator
        self._batch_ticks = max(1, BATCH_BYTES // self.max_packet_size)

    @property
    def subscribers(self) -> tuple[Subscriber, ...]:
        return self._subscribers.members

    def timestamp(self, tick: int) -> int:
        """Microseconds from server start to the start of tick ``tick``, on the tick grid."""
        microseconds: int = tick * self._us_numerator // self._us_denominator
        return microseconds

    def start_sources(self) -> None:
        started = []
        try:
            for state in self._states:
                state.source.start()
                started.append(state)
        except Exception:
            for state in started:
                state.source.stop()
            raise

    def stop_sources(self) -> None:
        for state in self._states:
            try:
                state.source.stop()
            except Exception:
                log.failure("source [{name}] failed to stop", name=state.source.spec.name)

    def source_health(self) -> tuple[SourceHealth, ...]:
        """A snapshot of every source's state and counters, in configuration order."""
        return tuple(state.health() for state in self._states)

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.remove(subscriber)

    # ---------------------------------------------------------------- per tick

    def produce(self, tick: int) -> Tick:
        """Read every source for ``tick`` and encode the body once."""
        for state in self._states:
            state.block = None if state.state in _STOPPED else self._read(state, tick)
        blocks: list[SampleArray | None] = []
        for route in self._routes:
            parts = route.parts
            if len(parts) == 1:
                state, rows = parts[0]
                block = state.block
                blocks.append(block if block is None or rows is None else block[rows])
                continue
            pieces: list[SampleArray] = []
            for state, rows in parts:
                if state.block is None:
                    pieces = []
                    break
                pieces.append(state.block if rows is None else state.block[rows])
            blocks.append(np.concatenate(pieces) if pieces else None)
        present, body = self.layout.encode(blocks)
        return Tick(tick, self.timestamp(tick), present, body, self.layout)

    def run(self, first: int, count: int = 1) -> None:
        """Produce ticks ``first`` .. ``first + count - 1`` and deliver them to every subscriber.

        A catch-up (``count`` > 1) goes out in batches (``BATCH_BYTES``), each
        batch to each subscriber in one call.
        """
        if count == 1:
            self._subscribers.deliver((self.produce(first),))
        else:
            end = first + count
            for start in range(first, end, self._batch_ticks):
                self._subscribers.deliver([self.produce(t) for t in range(start, min(end, start + self._batch_ticks))])
        self.ticks_sent = first + count

    def _read(self, state: _SourceState, tick: int) -> SampleArray | None:
        source = state.source
        spec = source.spec
        try:
            block = source.read(tick)
            if block is None:
                if not spec.aperiodic:
                    if state.device is None:
                        raise ValueError("a periodic source returned no block")
                    state.missed += 1  # no complete block yet: absent, never invented
                    if state.state != "zero-filling":
                        state.state = "waiting"
                    return None
            else:
                block = as_block(spec, block)
        except SourceFinished as end:
            self._source_finished(state, tick, end)
            return None
        except Exception as error:
            return self._source_failed(state, tick, error)
        if state.state == "zero-filling":
            log.info("source [{name}] delivers again at tick {tick}", name=spec.name, tick=tick)
        state.state = "streaming"
        return block

    def _source_failed(self, state: _SourceState, tick: int, error: Exception) -> SampleArray | None:
        spec = state.source.spec
        if spec.on_error == "zero-fill" and not spec.aperiodic:
            if state.state != "zero-filling":
                state.state = "zero-filling"
                log.error(
                    "source [{name}] failed at tick {tick}: {error}; sending zeros until it recovers "
                    "(on_error = zero-fill)", name=spec.name, tick=tick, error=error,
                )
            return np.zeros((len(spec.channels), spec.block_size), dtype=np.float32)
        state.state = "failed"
        if spec.on_error == "stop-server":
            log.critical(
                "source [{name}] failed at tick {tick}: {error}; stopping the server "
                "(on_error = stop-server)", name=spec.name, tick=tick, error=error,
            )
            self._fatal(f"source [{spec.name}] failed: {error}")
        else:
            log.error(
                "source [{name}] failed at tick {tick}: {error}; its signals are no longer sent "
                "(on_error = stop-signal)", name=spec.name, tick=tick, error=error,
            )
        return None

    def _source_finished(self, state: _SourceState, tick: int, end: SourceFinished) -> None:
        """End of data (a replayed file): not an error; the source's signals stop."""
        spec = state.source.spec
        state.state = "finished"
        if end.stop_server:
            log.info(
                "source [{name}] finished at tick {tick}: {reason}; stopping the server (on_end = stop-server)",
                name=spec.name, tick=tick, reason=end,
            )
            self._fatal(f"source [{spec.name}] finished: {end}")
        else:
            log.info(
                "source [{name}] finished at tick {tick}: {reason}; its signals are no longer sent "
                "(on_end = stop-signal)", name=spec.name, tick=tick, reason=end,
            )

    def _fatal(self, reason: str) -> None:
        """Ask once for the server to stop, however many sources end on the same tick."""
        if self._on_fatal is not None and not self._fatal_sent:
            self._fatal_sent = True
            self._on_fatal(reason)
