"""`python -m srq` is the `srq` command."""

import sys

from srq.pipeline.cli import main

sys.exit(main())
