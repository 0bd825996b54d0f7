"""``python -m causalrec.cli``."""
import sys

from . import main

sys.exit(main())
