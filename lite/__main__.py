"""`python -m lite ...` (what torchrun launches) is the same as the `lite` command."""

import sys

from lite.cli import main

sys.exit(main())
