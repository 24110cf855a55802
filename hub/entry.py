"""Where the three scripts and their console commands start: a check that this Python can run
the hub, made before any hub module that needs a third-party package is imported.

IntegrationWrapper.py and its two helpers (at the repository root) and the console commands of
an installed copy (integration-wrapper, integration-wrapper-adding-log,
integration-wrapper-run-controller; see pyproject.toml) all call wrapper(), adding_log() or
run_controller() here. Each checks that the running Python is 3.9 or newer and can import the
hub's runtime packages, and only then imports the command's module and runs its main().

When it cannot -- typically cron's /usr/bin/python3 instead of the installation's virtual
environment -- it prints ONE line on stderr naming what is missing and the fix (the virtual
environment's Python by its absolute path when `.venv` exists beside the scripts, else the two
commands that create it) and returns 2: a configuration error, nothing ran. Without this check
the result would be a ModuleNotFoundError traceback and exit 1, which the hub's exit codes reserve
for "a run ended with warnings".

An installed copy (not a checkout) has no folder "beside the scripts" to keep its journal in; so
when $HUB_LOG_DIR is not set, its commands set it to $XDG_STATE_HOME/integration-hub (by default
~/.local/state/integration-hub) before the command's module reads it. Children inherit it, so
the helper commands a wrapped script calls find the same journal.

This module must stay importable by whatever Python a machine has as `python3`, old ones
included (it is what tells them they are too old): standard library only, and no syntax newer
than Python 2.7 (no f-strings, no annotations, no `from __future__ import annotations`).
"""

import os
import sys


MINIMUM_PYTHON = (3, 9)
EXIT_USAGE = 2  # hub.vocabulary.EXIT_USAGE; not imported, since vocabulary needs Python 3.9

# What the hub imports from outside the standard library: (module to try, package that
# provides it). The same packages as requirements.txt; tests/test_install.py keeps the three
# (these, requirements.txt, the imports of hub/) in step.
REQUIRED = (
    ("dateutil", "python-dateutil"),
)

# The folder that holds the hub package: a checkout (the root scripts, requirements.txt and
# perhaps .venv beside it) or, for an installed copy, site-packages.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".venv")


def wrapper():
    """IntegrationWrapper.py and the console command integration-wrapper."""
    return run("IntegrationWrapper.py", "hub.wrapper")


def adding_log():
    """IntegrationWrapperAddingLog.py and the console command integration-wrapper-adding-log."""
    return exit_now(run("IntegrationWrapperAddingLog.py", "hub.adding_log"))


def run_controller():
    """IntegrationWrapperRunController.py and the console command integration-wrapper-run-controller."""
    return exit_now(run("IntegrationWrapperRunController.py", "hub.run_controller"))


def exit_now(code):
    """End a helper's process with `code` once its work is done, without the interpreter's
    teardown of every module and object: a helper is called once per event a script reports,
    and the teardown took a fifth of its time (20-30 ms of 110-150). By now its journal, log
    and connections are closed (hub.context.run_script); the streams are flushed here. Should
    a thread that is not a daemon still run, the process ends the usual way instead."""
    import threading
    if any(not t.daemon for t in threading.enumerate() if t is not threading.current_thread()):
        return code
    code = code if isinstance(code, int) else (0 if code is None else 1)
    for stream in (sys.stdout, sys.stderr):
        if stream is None:   # started with the stream closed
            continue
        try:
            stream.flush()
        except (IOError, OSError, ValueError):
            # What the helper printed is lost: that must not pass for success (exit 1, as for
            # the line hub.console.Console.hand_over could not write).
            if stream is sys.stdout and code == 0:
                code = 1
                try:
                    sys.stderr.write("error: what was printed on stdout could not be written (its reader is gone)\n")
                    sys.stderr.flush()
                except (IOError, OSError, ValueError, AttributeError):
                    pass
    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()
    os._exit(code)


def run(script, module):
    """Check this Python, then import `module` and return its main()'s exit code.

    `script` is the root script's file name, used in the fix the message gives.
    """
    line = problem(script)
    if line is not None:
        try:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except (IOError, OSError, ValueError):  # stderr closed: the exit code still tells
            pass
        return EXIT_USAGE
    if not in_checkout() and not os.environ.get("HUB_LOG_DIR"):
        os.environ["HUB_LOG_DIR"] = installed_log_dir()
    return __import__(module, fromlist=["main"]).main()


def in_checkout():
    """True when the hub runs from a checkout (the root scripts beside the package)."""
    return (os.path.isfile(os.path.join(ROOT, "IntegrationWrapper.py"))
            and os.path.isfile(os.path.join(ROOT, "requirements.txt")))


def installed_log_dir():
    """The log folder of an installed copy: $XDG_STATE_HOME/integration-hub, else ~/.local/state/..."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "integration-hub")


def problem(script, version_info=None, required=REQUIRED):
    """None when this Python can run the hub; else the one line to print (no newline)."""
    version_info = tuple(sys.version_info if version_info is None else version_info)
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else script
    python = sys.executable or "this Python"
    here = "%s (Python %s)" % (python, ".".join(str(part) for part in version_info[:3]))
    if version_info[:2] < MINIMUM_PYTHON:
        what = "%s needs Python %d.%d or newer; it was started by %s" % (
            (prog,) + MINIMUM_PYTHON + (here,))
        return "error: %s. %s" % (what, _fix(script, old_python=True))
    missing = []
    for module, package in required:
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
        except Exception as exc:  # noqa: BLE001 - a broken package must not become a traceback
            missing.append("%s (importing it fails: %s: %s)" % (package, type(exc).__name__, exc))
    if not missing:
        return None
    what = "%s needs the package%s %s, which %s does not have" % (
        prog, "s" if len(missing) > 1 else "", ", ".join(missing), here)
    return "error: %s. %s" % (what, _fix(script, old_python=False, missing=missing))


def _fix(script, old_python, missing=()):
    """The fix, as one sentence with the commands to run."""
    if not in_checkout():
        if old_python:
            return "Install the hub with Python %d.%d or newer (pipx install, or pip install in a " \
                   "virtual environment)." % MINIMUM_PYTHON
        return "Install %s into this Python's environment: %s -m pip install %s" % (
            "them" if len(missing) > 1 else "it", _quote(sys.executable or "python3"),
            " ".join(_quote(name.split(" ")[0]) for name in missing))
    venv_python = os.path.join(VENV, "bin", "python")
    script_path = _quote(os.path.join(ROOT, script))
    create = "cd %s && python3 -m venv .venv && .venv/bin/pip install -r requirements.txt" % _quote(ROOT)
    newer = " with Python %d.%d or newer as python3" % MINIMUM_PYTHON if old_python else ""
    if not os.path.exists(venv_python):
        return "Create the virtual environment%s: %s, then run %s %s" % (
            newer, create, _quote(venv_python), script_path)
    if _is_running_python(VENV):
        if old_python:
            return "Recreate the virtual environment%s: cd %s && rm -r .venv && python3 -m venv .venv " \
                   "&& .venv/bin/pip install -r requirements.txt" % (newer, _quote(ROOT))
        return "Install the requirements into it: %s install -r %s" % (
            _quote(os.path.join(VENV, "bin", "pip")), _quote(os.path.join(ROOT, "requirements.txt")))
    return "Run it with the virtual environment's Python: %s %s" % (_quote(venv_python), script_path)


def _is_running_python(venv):
    try:
        return os.path.realpath(sys.prefix) == os.path.realpath(venv)
    except (OSError, ValueError):
        return False


def _quote(text):
    """`text` as a shell word (shlex.quote, which Python 2 lacks)."""
    safe = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./-_"
    if text and all(char in safe for char in text):
        return text
    return "'" + text.replace("'", "'\"'\"'") + "'"
