"""`python -m diffaug ...` (and `torchrun ... -m diffaug fit ...`): the same as the `diffaug` command."""

import sys

from .cli import main

sys.exit(main())
