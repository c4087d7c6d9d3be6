"""The stream hub: one master tick -> one encoded body -> every subscriber.

Each tick the hub reads every source once, assembles the signals in wire
order, encodes the body (variable header + samples) once, and hands the same
bytes to each subscriber, which adds only its own 33-byte header.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from twisted.logger import Logger

from tia.protocol.metainfo import MetaInfo, SignalInfo, Subject
from tia.protocol.packet import SampleArray, encode_body, packet_size
from tia.protocol.signals import SignalType
from tia.sources.base import ISource, SourceFinished, as_block

log = Logger()


class Subscriber(Protocol):
    """Anything that sends packets somewhere: a TCP data connection, a UDP destination."""

    def send_tick(self, flags: int, body: bytes, packet_id: int, timestamp: int) -> None: ...


@runtime_checkable
class HoldingSubscriber(Subscriber, Protocol):
    """A subscriber that can hold the packets of a catch-up burst and write them at once."""

    def hold(self) -> None: ...

    def release(self) -> None: ...


class HubError(ValueError):
    """Sources that cannot be streamed together."""


@dataclass
class _SourceState:
    source: ISource
    failed: bool = False
    zero_filling: bool = False
    missed: int = 0  # ticks a device-clocked source had no complete block
    block: SampleArray | None = None


@dataclass
class _SignalRoute:
    """Where one signal's channels come from: (source, rows of its block or None for all)."""

    type: SignalType
    parts: list[tuple[_SourceState, npt.NDArray[np.intp] | None]] = field(default_factory=list)


class StreamHub:
    def __init__(
        self,
        sources: Sequence[ISource],
        subject: Subject | None = None,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        periodic = [s for s in sources if not s.spec.aperiodic]
        if not periodic:
            raise HubError("at least one periodic source is needed to set the packet rate")
        self.master = periodic[0].spec
        self.packet_rate: Fraction = self.master.packet_rate
        self._states = [_SourceState(source) for source in sources]
        self._on_fatal = on_fatal
        self._fatal_sent = False
        self.subscribers: list[Subscriber] = []
        self.ticks_sent = 0
        # The raw blocks of the tick being sent, (flag, channels x block) in wire order, for
        # subscribers that send their own selection of them (tia.server.custom) without
        # decoding the shared body. Valid during the fan-out of that tick only.
        self.current_blocks: list[tuple[int, SampleArray]] = []

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
                route = routes.setdefault(flag, _SignalRoute(spec.channels[rows[0]].type))
                whole = rows == list(range(len(spec.channels)))
                route.parts.append((state, None if whole else np.array(rows, dtype=np.intp)))
        self._routes = [routes[flag] for flag in sorted(routes)]
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
        self.max_packet_size = packet_size(
            [(s.num_channels, s.block_size) for s in self.metainfo.signals]
        )
        self._us_numerator = 1_000_000 * self.packet_rate.denominator
        self._us_denominator = self.packet_rate.numerator

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

    def subscribe(self, subscriber: Subscriber) -> None:
        if subscriber not in self.subscribers:
            self.subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self.subscribers:
            self.subscribers.remove(subscriber)

    @contextmanager
    def burst(self) -> Iterator[None]:
        """Ticks run inside (the master clock catching up) reach each holding subscriber as
        one write instead of one per tick; the fan-out itself stays tick by tick."""
        holding = [s for s in self.subscribers if isinstance(s, HoldingSubscriber)]
        for subscriber in holding:
            subscriber.hold()
        try:
            yield
        finally:
            for subscriber in holding:
                try:
                    subscriber.release()
                except Exception:
                    log.failure("dropping subscriber {subscriber} after a send error", subscriber=subscriber)
                    self.unsubscribe(subscriber)

    def encode_tick(self, tick: int) -> tuple[int, bytes]:
        """Read every source for ``tick`` and encode the body once: (flags, body)."""
        for state in self._states:
            state.block = None if state.failed else self._read(state, tick)
        blocks: list[tuple[int, SampleArray]] = []
        for route in self._routes:
            pieces = []
            for state, rows in route.parts:
                if state.block is None:
                    break
                pieces.append(state.block if rows is None else state.block[rows])
            else:
                blocks.append((route.type.flag, pieces[0] if len(pieces) == 1 else np.concatenate(pieces)))
        self.current_blocks = blocks
        return encode_body(blocks)

    def run_tick(self, tick: int) -> None:
        """Produce tick ``tick`` and send it to every subscriber."""
        flags, body = self.encode_tick(tick)
        timestamp = self.timestamp(tick)
        for subscriber in tuple(self.subscribers):
            try:
                subscriber.send_tick(flags, body, tick, timestamp)
            except Exception:
                log.failure("dropping subscriber {subscriber} after a send error", subscriber=subscriber)
                self.unsubscribe(subscriber)
        self.ticks_sent = tick + 1

    def _read(self, state: _SourceState, tick: int) -> SampleArray | None:
        spec = state.source.spec
        try:
            block = state.source.read(tick)
            if block is None:
                if not spec.aperiodic:
                    if not getattr(state.source, "device_clocked", False):
                        raise ValueError("a periodic source returned no block")
                    state.missed += 1  # no complete block yet: absent, never invented
                    return None
            else:
                block = as_block(spec, block)
        except SourceFinished as end:
            self._source_finished(state, tick, end)
            return None
        except Exception as error:
            return self._source_failed(state, tick, error)
        if state.zero_filling:
            state.zero_filling = False
            log.info("source [{name}] delivers again at tick {tick}", name=spec.name, tick=tick)
        return block

    def _source_failed(self, state: _SourceState, tick: int, error: Exception) -> SampleArray | None:
        spec = state.source.spec
        if spec.on_error == "zero-fill" and not spec.aperiodic:
            if not state.zero_filling:
                state.zero_filling = True
                log.error(
                    "source [{name}] failed at tick {tick}: {error}; sending zeros until it recovers "
                    "(on_error = zero-fill)", name=spec.name, tick=tick, error=error,
                )
            return np.zeros((len(spec.channels), spec.block_size), dtype=np.float32)
        state.failed = True
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
        state.failed = True
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
