#!/usr/bin/env python3
"""IntegrationWrapper: see README.md, or run with --help."""
import sys

from hub.wrapper import main

if __name__ == "__main__":
    sys.exit(main())
