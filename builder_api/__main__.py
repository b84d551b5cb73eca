"""`python3 -m builder_api [...]` or `python3 path/to/builder_api [...]` starts the daemon."""

import os
import sys

if not __package__:
    # Run as a directory (`python3 .../builder_api`): import the package from its parent, and
    # keep the package directory itself off sys.path so its modules shadow nothing.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, os.path.dirname(here))

from builder_api.daemon import main

if __name__ == "__main__":
    sys.exit(main())
