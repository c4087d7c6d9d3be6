"""Configuration: the shipped files load, every error names file, section and key."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import pytest
from support import config_from_text
from test_tls import make_pki

from tia.config import (
    ConfigError,
    endpoint_address,
    load_config,
    sources_from_signal_options,
    with_control_port,
)
from tia.tap import PACKAGED_CONFIG, Options, StartupError

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = "[source:eeg]\ndriver = sine\nrate = 256\nblocksize = 8\nchannels = 4\ntype = eeg\n"


def test_default_config_is_a_realistic_demo() -> None:
    config = load_config(ROOT / "etc" / "server.ini")
    assert config.control == "tcp:9000:interface=127.0.0.1"
    assert config.packet_rate == 32
    types = {c.type.name for s in config.sources for c in s.channels}
    assert {"eeg", "eog", "bp", "event"} <= types
    assert config.subject.id == "S01"


def test_packaged_default_is_the_same_file() -> None:
    assert PACKAGED_CONFIG.read_bytes() == (ROOT / "etc" / "server.ini").read_bytes()


def test_example_configs_load(tmp_path: Path) -> None:
    for path in sorted((ROOT / "etc").glob("**/*.ini")):
        if path.name == "tls.ini":  # its certificates are the user's to make (README): made here, next to a copy
            make_pki(tmp_path / "certs")
            path = Path(shutil.copy(path, tmp_path / path.name))
        load_config(path)


def test_minimal_defaults() -> None:
    config = config_from_text(MINIMAL)
    assert config.udp.mode == "unicast"
    assert config.master.name == "eeg"
    assert [c.label for c in config.sources[0].channels] == ["eeg1", "eeg2", "eeg3", "eeg4"]


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config_from_text(text, path="lab.ini")
    return info.value


@pytest.mark.parametrize(
    ("text", "section", "key", "words"),
    [
        (MINIMAL + "frequncy = 3\n", "source:eeg", "frequncy", "unknown key"),
        (MINIMAL.replace("rate = 256", "rate = fast"), "source:eeg", "rate", "not a number"),
        (MINIMAL.replace("rate = 256", "rate = -5"), "source:eeg", "rate", "positive"),
        (MINIMAL.replace("driver = sine", "driver = sinus"), "source:eeg", "driver", "unknown driver"),
        (MINIMAL.replace("type = eeg", "type = eegg"), "source:eeg", "type", "unknown signal type"),
        (MINIMAL.replace("blocksize = 8", "blocksize = 0"), "source:eeg", "blocksize", "out of range"),
        (MINIMAL.replace("channels = 4", "channels = Cz, Pz:emgg"), "source:eeg", "channels", "unknown signal type"),
        (MINIMAL + "frequency = 1, 2\n", "source:eeg", None, "1 or 4 values"),
        (MINIMAL + "[udp]\nmode = anycast\n", "udp", "mode", "not one of"),
        (MINIMAL + "[udp]\nmode = broadcast\nport = 9001\n", "udp", "address", "missing"),
        (MINIMAL + "[udp]\nmode = multicast\naddress = 10.0.0.1\nport = 9001\n", "udp", "address", "not a multicast"),
        (MINIMAL + "[udp]\nmode = multicast\naddress = 239.1.1.1\n", "udp", "port", "missing"),
        (MINIMAL + "[server]\nbacklog = soon\n", "server", "backlog", "not a number"),
        (MINIMAL + "[server]\ncolour = red\n", "server", "colour", "unknown key"),
        (MINIMAL + "[sever]\n", "sever", None, "unknown section"),
        (MINIMAL + "[source:emg]\ndriver = sine\nrate = 100\nblocksize = 1\nchannels = 1\ntype = emg\n",
         "source:emg", "blocksize", "packets/s"),
        (MINIMAL + "[source:ev]\ndriver = events\nrate = 10\nchannels = e:event\n", "source:ev", "rate", "aperiodic"),
        (MINIMAL + "[source:ev]\ndriver = events\nchannels = e:eeg\n", "source:ev", "driver", "aperiodic"),
        (MINIMAL + "[source:mix]\ndriver = sine\nrate = 256\nblocksize = 8\nchannels = a:eeg, b:button\n",
         "source:mix", "channels", "aperiodic"),
        (MINIMAL + "[source:more]\ndriver = sine\nrate = 512\nblocksize = 16\nchannels = 2\ntype = eeg\n",
         "source:more", "channels", "one signal type"),
        ("[source:b]\ndriver = square\nchannels = b:button\n", None, None, "no periodic source"),
        ("[server]\n", None, None, "no [source:NAME]"),
        (MINIMAL.replace("channels = 4", "channels = 20000").replace("blocksize = 8", "blocksize = 64"),
         "udp", "mode", "UDP datagram"),
        (MINIMAL + "[source:cb]\ndriver = callback\nrate = 256\nblocksize = 8\nchannels = 1\ntype = emg\n"
         "callable = no_such_module:f\n", "source:cb", "callable", "cannot import"),
    ],
)
def test_errors_name_file_section_and_key(text: str, section: str | None, key: str | None, words: str) -> None:
    error = error_of(text)
    assert error.path == "lab.ini"
    assert error.section == section
    assert error.key == key
    assert words in str(error)
    assert str(error).startswith("lab.ini")


def test_missing_file_and_syntax_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.ini")
    bad = tmp_path / "bad.ini"
    bad.write_text("[source:eeg]\ndriver = sine\ndriver = ramp\n")
    with pytest.raises(ConfigError, match=str(bad)):
        load_config(bad)


def test_signal_options() -> None:
    specs = sources_from_signal_options(["eeg:16:512:16", "bp:1:64:2:noise", "button:2:32:1:square"])
    assert [s.driver for s in specs] == ["sine", "noise", "square"]
    assert specs[0].packet_rate == 32
    assert specs[2].sampling_rate == Fraction(32) and specs[2].block_size == 1
    for bad in ["eeg:16:512", "eegg:1:10:1", "eeg:x:10:1", "eeg:1:10:1:triangle", "eeg:0:10:1", "event:1:10:1"]:
        with pytest.raises(ConfigError) as info:
            sources_from_signal_options([bad])
        assert info.value.key == f"--signal #1 {bad!r}"  # the option, its position and what was written


def test_with_control_port() -> None:
    config = config_from_text(MINIMAL + "[server]\ncontrol = tcp:9000:interface=127.0.0.1\n")
    assert with_control_port(config, 9100).control == "tcp:9100:interface=127.0.0.1"
    config = config_from_text(MINIMAL + "[server]\ncontrol = tcp:interface=0.0.0.0:port=9000\n")
    assert with_control_port(config, 1).control == "tcp:interface=0.0.0.0:port=1"
    config = config_from_text(MINIMAL + "[server]\ncontrol = unix:/tmp/tia.sock\n")
    with pytest.raises(ConfigError):
        with_control_port(config, 1)


def test_endpoint_address() -> None:
    """The port (or path) a listening error is matched against, however the endpoint is written."""
    assert endpoint_address("tcp:9000:interface=127.0.0.1") == "9000"
    assert endpoint_address("tcp:interface=0.0.0.0:port=9001") == "9001"
    assert endpoint_address("tcp6:9002:interface=\\:\\:1") == "9002"
    assert endpoint_address("unix:/run/tia.sock") == "/run/tia.sock"
    assert endpoint_address("unix:address=/run/a\\:b.sock:mode=600") == "/run/a:b.sock"


def test_plugin_options(tmp_path: Path) -> None:
    path = tmp_path / "s.ini"
    path.write_text(MINIMAL)
    options = Options()
    options.parseOptions(["--config", str(path), "--port", "9500", "--signal", "emg:2:100:1:ramp"])
    assert options.config is not None
    assert options.config.control == "tcp:9500:interface=127.0.0.1"
    assert [s.driver for s in options.config.sources] == ["ramp"]
    with pytest.raises(StartupError, match="unknown key"):  # one line, no usage text: not a UsageError
        path.write_text(MINIMAL + "bogus = 1\n")
        Options().parseOptions(["--config", str(path)])
    path.write_text(MINIMAL)
    with pytest.raises(StartupError, match="--signal"):
        Options().parseOptions(["--config", str(path), "--signal", "eeg:1"])
    assert "--signal" in str(Options())
