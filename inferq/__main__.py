"""``python -m inferq`` is the ``inferq`` command."""

import sys

from inferq.cli.main import main

sys.exit(main())
