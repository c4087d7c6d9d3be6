"""Plugins: a ``tia.sources`` entry point of an installed distribution is a driver config can name."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support import config_from_text

from tia.config import ConfigError
from tia.sources import DRIVERS, build_source, find_driver

PLUGIN_MODULE = '''
import numpy as np
from zope.interface import implementer
from tia.sources import Driver
from tia.sources.base import ISource


@implementer(ISource)
class Constant:
    def __init__(self, spec):
        self.spec = spec

    def start(self):
        pass

    def stop(self):
        pass

    def read(self, tick):
        return np.full((len(self.spec.channels), self.spec.block_size), self.spec.options.get("value", 0.0),
                       dtype=np.float32)


DRIVER = Driver("whatever", Constant, {"value": float}, periodic=True)


def make_driver():
    return DRIVER


NOT_A_DRIVER = 42
'''


@pytest.fixture
def installed(tmp_path: Path) -> Iterator[str]:
    """A distribution 'installed' on sys.path: its module and a dist-info with entry_points.txt."""
    module = f"tia_plugin_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(PLUGIN_MODULE)
    dist_info = tmp_path / f"{module}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(textwrap.dedent(f"""\
        [tia.sources]
        {module}-const = {module}:DRIVER
        {module}-factory = {module}:make_driver
        {module}-broken = {module}_missing:DRIVER
        {module}-wrong = {module}:NOT_A_DRIVER
        """))
    saved = dict(DRIVERS)
    sys.path.insert(0, str(tmp_path))
    yield module
    sys.path.remove(str(tmp_path))
    sys.modules.pop(module, None)
    DRIVERS.clear()
    DRIVERS.update(saved)


def section(driver: str, extra: str = "") -> str:
    return f"[source:ext]\ndriver = {driver}\nrate = 10\nblocksize = 2\nchannels = 2\ntype = user2\n{extra}"


def test_an_entry_point_driver_is_named_in_config_like_a_built_in(installed: str) -> None:
    config = config_from_text(section(f"{installed}-const", "value = 2.5\n"))
    spec = config.sources[0]
    assert spec.driver == f"{installed}-const" and spec.options == {"value": 2.5}
    source = build_source(spec)
    np.testing.assert_array_equal(source.read(0), np.full((2, 2), 2.5))
    assert DRIVERS[f"{installed}-const"].name == f"{installed}-const"  # its entry point's name


def test_an_entry_point_may_name_a_callable_returning_the_driver(installed: str) -> None:
    assert config_from_text(section(f"{installed}-factory")).sources[0].driver == f"{installed}-factory"


def test_plugin_options_are_checked_like_built_ins(installed: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_text(section(f"{installed}-const", "colour = red\n"), path="lab.ini")
    assert (info.value.section, info.value.key) == ("source:ext", "colour")


@pytest.mark.parametrize(("suffix", "words"), [("broken", "failed to load"), ("wrong", "not a tia.sources.Driver")])
def test_a_broken_plugin_is_an_error_naming_its_entry_point(installed: str, suffix: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_text(section(f"{installed}-{suffix}"), path="lab.ini")
    error = info.value
    assert (error.section, error.key) == ("source:ext", "driver")
    assert words in error.message
    assert f"entry point {installed}-{suffix} = " in error.message
    assert f"distribution {installed} 1.0" in error.message


def test_a_broken_plugin_does_not_affect_other_sections(installed: str) -> None:
    config_from_text("[source:eeg]\ndriver = sine\nrate = 10\nchannels = 1\ntype = eeg\n")


def test_unknown_driver_is_still_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_text(section("no-such-driver"))
    assert info.value.key == "driver" and "entry point" in info.value.message


def test_the_shipped_example_plugin_is_found_through_txtias_own_entry_point() -> None:
    from importlib.metadata import entry_points

    if not any(e.name == "counter" for e in entry_points(group="tia.sources")):
        pytest.skip("txtia's metadata is not installed (pip install -e . registers the counter entry point)")
    saved = DRIVERS.pop("counter", None)
    try:
        driver = find_driver("counter")
        assert driver is not None and driver.name == "counter"
        config = config_from_text(section("counter", "step = 0.5\n"))
        np.testing.assert_array_equal(build_source(config.sources[0]).read(3), [[3, 3.5], [3, 3.5]])
    finally:
        DRIVERS.pop("counter", None)
        if saved is not None:
            DRIVERS["counter"] = saved
