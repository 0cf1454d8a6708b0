"""``python -m unierase.cli ...``: the ``unierase`` command without its console script.

python -m unierase.cli --help
"""

import sys

from unierase.cli import main

sys.exit(main())
