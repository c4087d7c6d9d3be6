"""Optional dependencies: a base install (no extras) runs whatever does not use them.

A missing extra is simulated with ``sys.modules[name] = None`` (``import name``
then raises ImportError): a configuration that does not use the feature loads,
one that does is refused with one line naming the section, the key and the
extra to install.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import config_from_text
from test_tls import make_pki

from tia.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "etc" / "examples"
OPTIONAL = ("edfio", "pylsl", "brainflow", "brainflow.board_shim", "OpenSSL", "mne")
EEG = "[source:eeg]\ndriver = sine\nrate = 256\nblocksize = 8\nchannels = 4\ntype = eeg\n"


def block(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Make ``import NAME`` fail as if the package were not installed."""
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize(
    ("missing", "text", "where", "extra"),
    [
        (("edfio",), EEG + "[recording]\nenabled = on\n", "[recording] enabled", "record"),
        (("edfio",), EEG + "[recording]\nenabled = on\nformats = edf, raw\n", "[recording] formats", "record"),
        (("pylsl",), EEG + "[lsl]\noutlets = on\n", "[lsl] outlets", "sources"),
        (("pylsl",), "[source:eeg]\ndriver = lsl\nstream_name = x\nrate = 250\nchannels = 2\ntype = eeg\n",
         "[source:eeg] driver", "sources"),
        (("brainflow", "brainflow.board_shim"), "[source:b]\ndriver = brainflow\nboard_id = SYNTHETIC_BOARD\n",
         "[source:b] driver", "sources"),
        (("edfio",), f"[source:eeg]\ndriver = replay\nfile = {EXAMPLES / 'data' / 'example.edf'}\n",
         "[source:eeg] file", "sources"),
        (("OpenSSL",), "[server]\ntls_certificate = certs/server.pem\n" + EEG, "[server] tls_certificate", "tls"),
    ],
)
def test_a_feature_without_its_extra_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, missing: tuple[str, ...], text: str, where: str, extra: str
) -> None:
    block(monkeypatch, *missing)
    with pytest.raises(ConfigError) as info:
        config_from_text(text, path="lab.ini")
    line = str(info.value)
    assert line.startswith(f"lab.ini {where}: ")
    assert line.endswith(f"pip install 'txtia[{extra}]'")
    assert "\n" not in line


def test_configs_not_using_an_extra_load_without_any(monkeypatch: pytest.MonkeyPatch) -> None:
    block(monkeypatch, *OPTIONAL)
    config = load_config(ROOT / "etc" / "server.ini")  # [recording] is there, switched off
    assert not config.recording.enabled and "bdf" in config.recording.formats
    config_from_text(EEG)  # no [recording] at all
    config_from_text(EEG + "[recording]\nenabled = off\nformats = edf\n[lsl]\noutlets = off\n")
    config_from_text(EEG + "[recording]\nenabled = on\nformats = raw, csv\n")
    for name in ("injected-events.ini", "plugin.ini", "replay-csv.ini"):
        load_config(EXAMPLES / name)


def test_the_examples_needing_an_extra_each_name_it(monkeypatch: pytest.MonkeyPatch) -> None:
    block(monkeypatch, *OPTIONAL)
    expected = {
        "brainflow-synthetic.ini": "[source:board] driver: the brainflow driver needs brainflow: "
                                   "pip install 'txtia[sources]'",
        "lsl.ini": "[source:eeg] driver: the lsl driver needs pylsl: pip install 'txtia[sources]'",
        "replay-edf.ini": "[source:eeg] file: replaying EDF/BDF needs edfio: pip install 'txtia[sources]'",
        "tls.ini": "[server] tls_certificate: TLS needs pyOpenSSL: pip install 'txtia[tls]'",
    }
    for name, message in expected.items():
        with pytest.raises(ConfigError) as info:
            load_config(EXAMPLES / name)
        assert str(info.value) == f"{EXAMPLES / name} {message}"


IMPORTERS = """
import json, sys

WATCHED = {"edfio", "pylsl", "brainflow", "OpenSSL", "mne"}
importers = {}

class Watch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in WATCHED:
            frame = sys._getframe(1)
            while frame.f_code.co_filename.startswith("<frozen") or "importlib" in frame.f_code.co_filename:
                frame = frame.f_back
            importers.setdefault(name.split(".")[0], frame.f_globals.get("__name__"))
        return None

sys.meta_path.insert(0, Watch())
import tia.config, tia.sources, tia.tap, tia.server.service
from tia.config import load_config
from tia.server.service import TiAService

config = load_config(sys.argv[1])
TiAService(config)  # built as twistd builds it, ports not bound
print(json.dumps({"importers": importers, "loaded": sorted(n for n in WATCHED if n in sys.modules)}))
"""


def test_tia_itself_imports_no_optional_package() -> None:
    """Only Twisted may import OpenSSL (its endpoints do, when it is installed); tia imports none of them."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORTERS, str(ROOT / "etc" / "server.ini")],
        capture_output=True, text=True, timeout=120, check=True,
    )
    report = json.loads(result.stdout)
    assert not [name for name, importer in report["importers"].items() if str(importer).startswith("tia")], report
    assert set(report["loaded"]) <= {"OpenSSL"}, report


def test_config_never_imports_the_server(tmp_path: Path) -> None:
    """Layers: config < server. Loading a config, TLS files included, imports no ``tia.server`` module."""
    pki = make_pki(tmp_path / "certs")
    ini = tmp_path / "tls.ini"
    ini.write_text(f"[server]\ntls_certificate = {pki.server_pem}\ntls_key = {pki.server_key}\n"
                   f"tls_client_ca = {pki.ca_pem}\n" + EEG)
    code = ("import sys; from tia.config import load_config; load_config(sys.argv[1]); "
            "print(sorted(m for m in sys.modules if m.startswith('tia.server')))")
    for path in (ini, ROOT / "etc" / "server.ini"):
        result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                                check=True)
        assert result.stdout.strip() == "[]"
