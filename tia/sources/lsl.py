"""LSL inlet (``driver = lsl``): a Lab Streaming Layer stream served as a TiA signal.

The stream is resolved by ``stream_name``, ``stream_type`` and/or
``source_id`` in a background thread, so the server starts whether or not
the stream is there yet. Nothing is resampled: the section's ``rate`` must be
the stream's nominal rate and its channel count the stream's (checked when
the stream is found; a mismatch is a source failure naming the section).
Samples go through the device buffer (``tia.sources.device``): complete
blocks only, loss and recovery logged, nothing invented.

An irregular stream (nominal rate 0, e.g. markers) feeds an aperiodic type
(``channels = marker:event``): each numeric sample is one event code;
a string marker that is not a number is logged and skipped.

A lost stream is resolved again: liblsl itself reconnects to a restarted
outlet with the same ``source_id``; when the stream is silent for
``lost_after`` and another outlet matches, the inlet switches to it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from zope.interface import implementer

from tia.sources.base import ISource, OptionError, SourceError, SourceSpec
from tia.sources.device import DeviceSource

PULL_TIMEOUT = 0.05
RESOLVE_WAIT = 1.0
MAX_CHUNK = 4096
_KEYS = (("stream_name", "name"), ("stream_type", "type"), ("source_id", "source_id"))


def parse_lsl_text(text: str) -> str:
    value = text.strip()
    if not value or "'" in value or '"' in value:
        raise ValueError("expected a non-empty value without quotes")
    return value


def import_pylsl() -> Any:
    """pylsl, or a ``SourceError`` saying how to get it (its liblsl may fail to load)."""
    try:
        import pylsl  # type: ignore[import-untyped]
    except ImportError as error:
        raise SourceError(
            f"the lsl driver needs pylsl with liblsl: pip install 'txtia[sources]' ({error})"
        ) from None
    except (OSError, RuntimeError) as error:
        raise SourceError(f"pylsl cannot load liblsl: {error}") from None
    return pylsl


def predicate(options: Mapping[str, object]) -> str:
    """The XPath predicate liblsl resolves: ``name='EEG' and type='EEG'``."""
    parts = [f"{field}='{options[key]}'" for key, field in _KEYS if key in options]
    if not parts:
        raise OptionError("stream_name", "missing; give stream_name, stream_type and/or source_id")
    return " and ".join(parts)


@implementer(ISource)
class LSLSource(DeviceSource):
    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.predicate = predicate(spec.options)
        self.description = f"the LSL stream {self.predicate}"

    def acquire(self, stopping: threading.Event) -> None:
        pylsl = import_pylsl()
        while not stopping.is_set():
            found = pylsl.resolve_bypred(self.predicate, 1, RESOLVE_WAIT)
            if not found:
                continue
            info = found[0]
            self._check(info)
            inlet = pylsl.StreamInlet(info, max_buflen=max(1, int(self.max_latency) + 1), recover=True)
            try:
                inlet.open_stream(timeout=RESOLVE_WAIT * 5)
                self.note("info", f"connected to LSL stream {info.name()!r} ({info.type()}, source_id "
                                  f"{info.source_id()!r}) on {info.hostname()}")
                self._pull(pylsl, inlet, info.uid(), stopping)
            except pylsl.LostError:
                self.note("warn", "LSL stream lost; resolving it again")
            except pylsl.TimeoutError:
                self.note("warn", "LSL stream found but not opened in time; resolving it again")
            finally:
                inlet.close_stream()

    def _check(self, info: Any) -> None:
        """Nothing is resampled or remapped: the stream must have the section's shape and rate."""
        channels = info.channel_count()
        if channels != len(self.spec.channels):
            raise SourceError(
                f"LSL stream {info.name()!r} has {channels} channels, the section lists {len(self.spec.channels)}"
            )
        nominal = info.nominal_srate()
        if self.spec.aperiodic:
            if nominal != 0:
                raise SourceError(
                    f"LSL stream {info.name()!r} is regular ({nominal:g} Hz): it feeds periodic types, not "
                    f"{self.spec.channels[0].type.name}"
                )
        elif nominal != float(self.spec.sampling_rate):
            raise SourceError(
                f"LSL stream {info.name()!r} has a nominal rate of {nominal:g} Hz, the section says rate = "
                f"{float(self.spec.sampling_rate):g} (set rate = {nominal:g}; nothing is resampled)"
            )

    def _pull(self, pylsl: Any, inlet: Any, uid: str, stopping: threading.Event) -> None:
        """Pull until stopped, or until another stream matching the predicate replaces a silent one."""
        strings = inlet.info().channel_format() == pylsl.cf_string
        last = time.monotonic()
        while not stopping.is_set():
            samples, _ = inlet.pull_chunk(timeout=PULL_TIMEOUT, max_samples=MAX_CHUNK)
            if not samples:
                if time.monotonic() - last >= self.lost_after and not self.spec.aperiodic:
                    last = time.monotonic()
                    # liblsl only recovers the same source_id: look for a new outlet too
                    found = pylsl.resolve_bypred(self.predicate, 1, PULL_TIMEOUT * 10)
                    if found and found[0].uid() != uid:
                        self.note("warn", "LSL stream silent and another matching stream is up; switching")
                        return
                continue
            last = time.monotonic()
            if strings:
                samples = self._numbers(samples)
                if not samples:
                    continue
            self.deliver(np.asarray(samples, dtype=np.float32).T)

    def _numbers(self, samples: list[list[str]]) -> list[list[float]]:
        numbers = []
        for sample in samples:
            try:
                numbers.append([float(value) for value in sample])
            except ValueError:
                self.note("warn", f"skipped the marker {sample!r}: not a number")
        return numbers
