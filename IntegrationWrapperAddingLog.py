#!/usr/bin/env python3
"""IntegrationWrapperAddingLog: see README.md, or run with --help."""
import sys

from hub.adding_log import main

if __name__ == "__main__":
    sys.exit(main())
