"""``python -m causalrec``: the command line (``causalrec.cli``), as the ``causalrec`` script."""
import sys

from .cli import main

sys.exit(main())
