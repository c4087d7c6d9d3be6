"""``python -m tia.cli``: the ``tia`` command without its console script."""

import sys

from tia.cli import main

sys.exit(main())
