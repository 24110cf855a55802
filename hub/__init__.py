"""The Integration Hub: the package behind IntegrationWrapper.py and its two helper scripts.

`__version__` is the one place the version is written: pyproject.toml reads it (setuptools'
dynamic version) and every script's --version prints it. Keep this module free of imports and of
syntax newer than Python 2.7: hub.entry imports it before it knows which Python is running.
"""

__version__ = "2.0.0"
