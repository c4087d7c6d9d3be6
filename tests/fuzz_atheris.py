"""Coverage-guided fuzzing with atheris: ``python tests/fuzz_atheris.py TARGET [CORPUS_DIR] [libFuzzer flags]``.

Run by tests/test_fuzz.py with a bounded ``-runs``; by hand, e.g.
``python tests/fuzz_atheris.py server_control -max_total_time=600``.
A crash leaves its input in a ``crash-*`` file (see ``-artifact_prefix``).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["tia"]):
    import fuzz_targets


def main() -> None:
    name, flags = sys.argv[1], sys.argv[2:]
    target = fuzz_targets.TARGETS[name]
    # the corpus: seeds in, new interesting inputs out (libFuzzer exits the process: no cleanup here)
    given = [flag for flag in flags if not flag.startswith("-")]
    flags = [flag for flag in flags if flag.startswith("-")]
    corpus = given[0] if given else tempfile.mkdtemp(prefix=f"tia-fuzz-{name}-")
    Path(corpus).mkdir(parents=True, exist_ok=True)
    for number, seed in enumerate(fuzz_targets.SEEDS[name]):
        Path(corpus, f"seed{number}").write_bytes(seed)
    atheris.Setup([sys.argv[0], *flags, corpus], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
