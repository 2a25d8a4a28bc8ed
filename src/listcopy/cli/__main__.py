"""``python -m listcopy.cli``: the ``listcopy`` command."""

import sys

from . import main

sys.exit(main())
