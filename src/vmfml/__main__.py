"""`python -m vmfml ...`, which is also how torchrun starts it: `torchrun ... -m vmfml train`."""

import sys

from vmfml.cli import main

sys.exit(main())
