"""The ``tia`` command against TLS daemons, with ``--tls``, ``--tls-ca``, ``--tls-cert`` and the rest.

The daemons run as subprocesses (as in test_cli) with the throwaway PKI of
test_tls: one with TLS, one with mutual TLS, one plain. Every failure must
be one line on stderr with the right exit code: 2 for an option whose file
cannot be used, 1 for a TLS failure, with a hint naming the option to check.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support import ramp_values, start_daemon
from test_cli import run
from test_tls import PKI, make_pki

from tia import cli
from tia.client.tls import TLSSettings

CHANNELS, BLOCK = 2, 10
SOURCE = f"""
[source:eeg]
driver = ramp
rate = 1000
blocksize = {BLOCK}
channels = {CHANNELS}
type = eeg
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_daemon(pki: PKI, workdir: Path, mutual: bool) -> Iterator[str]:
    """A ramp daemon with TLS (``mutual``: and tls_client_ca) and [recording] control."""
    config = workdir / "tls.ini"
    config.write_text(
        "[server]\ncontrol = tcp:0:interface=127.0.0.1\n"
        f"tls_certificate = {pki.server_pem}\ntls_key = {pki.server_key}\n"
        + (f"tls_client_ca = {pki.ca_pem}\n" if mutual else "")
        + SOURCE
        + f"\n[recording]\ndirectory = {workdir / 'recordings'}\nformats = raw\n",
        encoding="utf-8",
    )
    yield from start_daemon(["--config", str(config)], workdir)


@pytest.fixture(scope="module")
def tls_server(pki: PKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from tls_daemon(pki, tmp_path_factory.mktemp("tls"), mutual=False)


@pytest.fixture(scope="module")
def mutual_server(pki: PKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from tls_daemon(pki, tmp_path_factory.mktemp("mutual"), mutual=True)


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from start_daemon(["--signal", f"eeg:{CHANNELS}:1000:{BLOCK}:ramp"], tmp_path_factory.mktemp("plain"))


def one_line_error(code: int, out: str, err: str, expected_code: int, *texts: str) -> None:
    assert code == expected_code, err
    assert out == ""
    assert err.count("\n") == 1, err
    assert "Traceback" not in err and "_ssl.c" not in err, err
    for text in texts:
        assert text in err, err


# -- the options -------------------------------------------------------------------


@pytest.mark.parametrize("command", ["info", "monitor", "record", "ping", "lsl", "recording status"])
def test_every_control_connection_takes_the_tls_options(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    code, out, _ = run(capsys, *command.split(), "--help")
    assert code == 0
    for option in ("--tls ", "--tls-ca FILE", "--tls-cert FILE", "--tls-key FILE", "--tls-server-name NAME"):
        assert option in out


@pytest.mark.parametrize("command", ["event", "convert"])
def test_no_tls_options_without_a_control_connection(capsys: pytest.CaptureFixture[str], command: str) -> None:
    _, out, _ = run(capsys, command, "--help")
    assert "--tls" not in out  # [events] is not TLS; convert reads a file


def test_unusable_files_are_usage_errors_naming_the_option(
    capsys: pytest.CaptureFixture[str], pki: PKI, tmp_path: Path
) -> None:
    missing = str(tmp_path / "missing.pem")
    not_pem = tmp_path / "notes.pem"
    not_pem.write_text("not a certificate\n", encoding="utf-8")
    cases = [
        (["--tls-ca", missing], "argument --tls-ca: cannot read"),
        (["--tls-cert", missing], "argument --tls-cert: cannot read"),
        (["--tls-cert", pki.client_pem, "--tls-key", missing], "argument --tls-key: cannot read"),
        (["--tls-ca", str(tmp_path)], "argument --tls-ca: cannot read"),
        (["--tls-ca", str(not_pem)], "argument --tls-ca: cannot load"),
        (["--tls-cert", pki.client_pem, "--tls-key", pki.other_client_key], "argument --tls-cert/--tls-key"),
        (["--tls-key", pki.client_key], "argument --tls-key: needs --tls-cert"),
    ]
    for options, message in cases:
        for command in (["info"], ["ping"], ["recording", "status"]):
            one_line_error(*run(capsys, *command, "127.0.0.1:1", *options), 2, message)


def test_one_settings_for_every_client(monkeypatch: pytest.MonkeyPatch, pki: PKI) -> None:
    """``tia lsl`` hands the same TLSSettings to the bridge; no option, no TLS."""
    seen: list[object] = []

    def bridge(*args: object, tls: TLSSettings | None = None, sample_order: str = "channel-major") -> int:
        seen.append(tls)
        return 0

    monkeypatch.setattr("tia.lsl.republish.run_client_bridge", bridge)
    assert cli.main(["lsl", "--tls-ca", pki.ca_pem, "--tls-server-name", "localhost"]) == 0
    assert cli.main(["lsl", "--tls"]) == 0
    assert cli.main(["lsl"]) == 0
    assert seen == [TLSSettings(ca=pki.ca_pem, server_name="localhost"), TLSSettings(), None]


# -- against TLS daemons -----------------------------------------------------------


def test_info_ping_monitor_record_recording_over_tls(
    capsys: pytest.CaptureFixture[str], pki: PKI, tls_server: str, tmp_path: Path
) -> None:
    tls = ["--tls-ca", pki.ca_pem]
    code, out, err = run(capsys, "info", tls_server, *tls)
    assert code == 0, err
    assert f"Server:   {tls_server}" in out
    assert "Master:   1000 Hz, block size 10, 100 packets/s" in out

    code, out, err = run(capsys, "ping", tls_server, *tls, "--tls-server-name", "localhost", "-n", "3", "-i", "0")
    assert code == 0, err
    assert f"{tls_server}: 3 replies" in out

    code, out, err = run(capsys, "monitor", tls_server, *tls, "--count", "1", "--interval", "0.3", "--plain")
    assert code == 0, err
    assert "eeg" in out and "gaps 0" in out

    path = tmp_path / "tls.npz"
    code, out, err = run(capsys, "record", tls_server, *tls, "-o", str(path), "--seconds", "0.5", "-q")
    assert code == 0, err
    assert "50 packets, 0 missing" in out
    with np.load(path) as data:
        first = int(data["first_packet_id"])
        np.testing.assert_array_equal(data["eeg"], np.array(ramp_values(CHANNELS, first * BLOCK, 500), np.float32))

    code, out, err = run(capsys, "recording", "status", tls_server, *tls)
    assert code == 0, err
    assert "recording: off" in out


def test_mutual_tls_with_a_client_certificate(
    capsys: pytest.CaptureFixture[str], pki: PKI, mutual_server: str, tmp_path: Path
) -> None:
    code, out, err = run(
        capsys, "ping", mutual_server, "--tls-ca", pki.ca_pem, "--tls-cert", pki.client_pem,
        "--tls-key", pki.client_key, "-n", "2", "-i", "0",
    )
    assert code == 0, err
    assert f"{mutual_server}: 2 replies" in out
    combined = tmp_path / "client-with-key.pem"  # --tls-key defaults to the --tls-cert file
    combined.write_bytes(Path(pki.client_pem).read_bytes() + Path(pki.client_key).read_bytes())
    path = tmp_path / "mutual.npz"
    code, out, err = run(
        capsys, "record", mutual_server, "--tls-ca", pki.ca_pem, "--tls-cert", str(combined),
        "-o", str(path), "--seconds", "0.2", "-q",
    )
    assert code == 0, err
    assert "20 packets, 0 missing" in out


# -- TLS failures: exit 1, one line, a hint ------------------------------------------


def test_untrusted_server_certificate(capsys: pytest.CaptureFixture[str], pki: PKI, tls_server: str) -> None:
    wrong_name = ["--tls-ca", pki.ca_pem, "--tls-server-name", "a.example"]
    for options in (["--tls-ca", pki.other_ca_pem], ["--tls"], wrong_name):
        for command in ("info", "ping"):
            one_line_error(
                *run(capsys, command, tls_server, *options, "--timeout", "5"), 1,
                f"cannot connect to {tls_server}", "CERTIFICATE_VERIFY_FAILED", "check --tls-ca and --tls-server-name",
            )
    one_line_error(
        *run(capsys, "recording", "status", tls_server, "--tls-ca", pki.other_ca_pem), 1,
        "CERTIFICATE_VERIFY_FAILED", "check --tls-ca",
    )


def test_tls_to_a_plain_server_and_plain_to_a_tls_server(
    capsys: pytest.CaptureFixture[str], pki: PKI, plain_server: str, tls_server: str
) -> None:
    one_line_error(
        *run(capsys, "info", plain_server, "--tls-ca", pki.ca_pem, "--timeout", "5"), 1,
        f"cannot connect to {plain_server}", "the server does not speak TLS",
    )
    for command in (["info"], ["ping"], ["recording", "status"]):
        one_line_error(
            *run(capsys, *command, tls_server, "--timeout", "5"), 1,
            "this server requires TLS", "use --tls-ca FILE",
        )


def test_mutual_tls_server_refuses_clients_without_its_certificate(
    capsys: pytest.CaptureFixture[str], pki: PKI, mutual_server: str
) -> None:
    code, out, err = run(capsys, "info", mutual_server, "--tls-ca", pki.ca_pem, "--timeout", "5")
    one_line_error(code, out, err, 1, "--tls-cert")
    assert "client certificate" in err
    stranger = ["--tls-cert", pki.other_client_pem, "--tls-key", pki.other_client_key]
    code, out, err = run(capsys, "ping", mutual_server, "--tls-ca", pki.ca_pem, *stranger, "--timeout", "5")
    one_line_error(code, out, err, 1, "control connection lost")
