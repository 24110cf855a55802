#!/usr/bin/env python3
"""IntegrationWrapperRunController: see README.md, or run with --help."""
import sys

from hub.run_controller import main

if __name__ == "__main__":
    sys.exit(main())
