#!/usr/bin/env python3
"""IntegrationWrapperAddingLog: see README.md, or run with --help.

hub.entry first checks that this Python can run the hub (3.9 or newer, the packages of
requirements.txt), so keep this file readable by any Python: no newer syntax here.
"""
import sys

from hub.entry import adding_log

if __name__ == "__main__":
    sys.exit(adding_log())
