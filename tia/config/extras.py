"""Optional dependencies: checked when, and only when, a configuration uses the feature.

A base install (``pip install .``) runs every configuration that needs no
extra; one that does is refused at load time with one line naming the extra
to install, rather than failing later, or failing everyone else.
"""

from __future__ import annotations

import importlib


def missing_extra(module: str, feature: str, extra: str, package: str | None = None) -> str | None:
    """None if ``module`` imports; otherwise the one line telling the user what to install.

    ``package`` is the distribution's name when it differs from the module's
    (``pyOpenSSL`` for ``OpenSSL``). A package that is installed but cannot
    load its native library (pylsl without liblsl) is reported as such.
    """
    package = package or module.split(".")[0]
    try:
        importlib.import_module(module)
    except ImportError:
        return f"{feature} needs {package}: pip install 'txtia[{extra}]'"
    except (OSError, RuntimeError) as error:  # a wrapper without its native library
        return f"{feature} needs {package}, which is installed but cannot load: {' '.join(str(error).split())}"
    return None
