"""The wheel: ships the plugin without breaking Twisted's namespace; a fresh venv finds it."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True, timeout=300,
    )
    (built,) = out.glob("txtia-*.whl")
    return built


@pytest.mark.slow
def test_wheel_contents(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "twisted/plugins/tia_plugin.py" in names
    assert "twisted/__init__.py" not in names
    assert "twisted/plugins/__init__.py" not in names
    assert not any(name.endswith("dropin.cache") for name in names)
    assert "tia/default-server.ini" in names
    assert {"tia/web/static/index.html", "tia/web/static/app.js", "tia/web/static/style.css"} <= names
    assert "tia/protocol/control.py" in names
    assert not any(name.startswith("tests/") for name in names)


@pytest.mark.slow
def test_fresh_venv_lists_the_plugin(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(target)
    python = target / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=600)
    help_text = subprocess.run(
        [str(target / "bin" / "twistd"), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    ).stdout
    assert any(line.split()[:1] == ["tia"] for line in help_text.splitlines())
    tia_help = subprocess.run(
        [str(target / "bin" / "twistd"), "tia", "--help"], cwd=tmp_path, capture_output=True, text=True,
        timeout=120,
    ).stdout
    assert "--config" in tia_help and "--signal" in tia_help and "--port" in tia_help
    record = next((target / "lib").glob("python*/site-packages/txtia-*.dist-info/RECORD")).read_text()
    assert "twisted/plugins/tia_plugin.py" in record
    assert "twisted/plugins/__init__.py" not in record  # that one is Twisted's own
