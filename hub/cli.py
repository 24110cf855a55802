"""The command lines of the three scripts, and the one place where an error becomes
a message and an exit code (SPEC sections 5-8).

Each `*_parser()` builds a fresh argparse parser; `parse()` runs it and then checks
the combinations argparse cannot express (e.g. `--replay` with `--name`). Every bad
flag or value exits 2 with the usage and a message naming the flag. Passwords are
never flags: they live in Passwords.json, so nothing secret passes through argv
(where `ps` would show it).

`run_command(main)` wraps a script's main(): a hub.errors.HubError becomes
"error: <message>" on stderr and its exit code; anything else is a short
"internal error" line, never a traceback on the terminal (cron mails it).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import textwrap
from typing import Callable, Iterable, List, Optional, Sequence

from hub import __version__, vocabulary
from hub.errors import HubError
from hub.schema import default_schema_json

EXIT_INTERNAL = 1  # see run_command

_EPILOG = """exit codes:
  0    done; every run ended "Executed without Warnings"
  1    done; at least one run ended "Executed with Warnings" (also: internal error, or
       a helper's run key or record ID could not be written to stdout)
  2    usage or configuration error (bad flag, bad JSON, unknown key, missing file); nothing ran
  3    OneVizion refused the credentials or could not be reached before anything started
  4    not found: integration, or no running run
  5    integration disabled (RunController start without --force)
  6    OneVizion refused something the hub sent; kept in the journal as refused (--status shows why)
  75   accepted into the local journal; OneVizion will get it later
  128+N  stopped by signal N (after closing the run)"""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that also carries the cross-flag checks parse() runs."""

    def __init__(self, checks: Sequence[Callable[[argparse.Namespace], Optional[str]]] = (),
                 **kwargs):
        kwargs.setdefault("epilog", _EPILOG)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        # No abbreviations: a cron line written as --pass must not silently keep working
        # only until a second flag starting with --pass appears.
        kwargs.setdefault("allow_abbrev", False)
        # The raw formatter keeps the epilog's table; so wrap the description here.
        if kwargs.get("description"):
            kwargs["description"] = textwrap.fill(kwargs["description"], 78)
        super().__init__(**kwargs)
        self.checks = list(checks)


def default_log_dir() -> str:
    """$HUB_LOG_DIR if set and not empty, else `log/` in the repository root (beside the scripts)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.environ.get("HUB_LOG_DIR") or os.path.join(root, "log")


# ---------------------------------------------------------------- value types

def positive_number(text: str) -> float:
    """argparse type: a finite number greater than 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number, got %r" % text) from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError("expected a number greater than 0, got %r" % text)
    return value


def non_empty(text: str) -> str:
    """argparse type: a string that is not empty or blank."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


_MESSAGE_TYPES = {"0": vocabulary.INFO, "1": vocabulary.WARNING, "2": vocabulary.ERROR}
_MESSAGE_TYPES.update({name.lower(): name for name in vocabulary.MESSAGE_TYPES})


def message_type(text: str) -> str:
    """argparse type: 0/1/2 or Info/Warning/Error in any case -> hub.vocabulary.INFO/WARNING/ERROR."""
    try:
        return _MESSAGE_TYPES[text.strip().lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(
            "invalid message type %r (choose 0 or Info, 1 or Warning, 2 or Error)" % text) from None


def readable_file(text: str) -> str:
    """argparse type: an existing, readable regular file (checked before anything is sent)."""
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError("no such file: %r" % text)
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError("not a regular file: %r" % text)
    if not os.access(text, os.R_OK):
        raise argparse.ArgumentTypeError("cannot read %r (permission denied)" % text)
    return text


class _PrintDefaultSchema(argparse.Action):
    """--print-default-schema: prints and exits at once, like --help, so -p is not needed."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        sys.stdout.write(default_schema_json())
        parser.exit(0)


# ---------------------------------------------------------------- shared flags

def _add_common(parser: argparse.ArgumentParser) -> None:
    # Like --help, --version prints and exits before -p is required.
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__,
                        help="print the script's name and the hub's version, and exit")
    parser.add_argument("-p", "--passwords", metavar="FILE", required=True,
                        help="Passwords.json: the OneVizion URL and credentials (keep it mode 0600)")
    parser.add_argument("-s", "--schema", metavar="FILE",
                        help="Schema.json: trackor types, field names and drop-down values that "
                             "differ from the defaults (see --print-default-schema of "
                             "IntegrationWrapper.py)")
    parser.add_argument("--log-dir", metavar="DIR", default=default_log_dir(),
                        help="folder of the hub's own log and local journal "
                             "(default: $HUB_LOG_DIR, else log/ beside the scripts: %(default)s)")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true",
                          help="print only errors (default: on a terminal, what the script does; without one, "
                               "warnings and errors)")
    loudness.add_argument("-v", "--verbose", action="store_true",
                          help="print what the script does even without a terminal")


def _integration_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--integration-id", metavar="ID", required=True, type=non_empty,
                        help="the Integration's ID (its TRACKOR_KEY)")


# ---------------------------------------------------------------- the three parsers

def wrapper_parser() -> argparse.ArgumentParser:
    """IntegrationWrapper.py: run the integrations of Integration.json, or --replay the journal."""
    parser = _Parser(
        prog="IntegrationWrapper.py", checks=[_check_wrapper],
        description="Run the integrations listed in Integration.json, one after the other, each "
                    "as an Integration Run in OneVizion with its output as live Log records. "
                    "With --replay, only deliver what the local journal still holds.")
    _add_common(parser)
    parser.add_argument("-i", "--integrations", metavar="FILE",
                        help="Integration.json: the list of integrations to run "
                             "(required unless --replay, --status or --discard; with --check: its entries "
                             "are checked too)")
    parser.add_argument("--name", metavar="NAME", action="append",
                        help="run only the entry with this IntegrationName; repeat for several")
    parser.add_argument("--control-process", metavar="NAME",
                        help="run only integrations whose Control Process is NAME")
    parser.add_argument("--allow-overlap", action="store_true",
                        help="run an integration even if a run of it is still going on this machine")
    parser.add_argument("--replay", action="store_true",
                        help="deliver what the local journal owes this installation and exit; runs nothing "
                             "(refused items only with --retry-refused)")
    parser.add_argument("--retry-refused", action="store_true",
                        help="with --replay: send the items OneVizion refused once more")
    parser.add_argument("--status", action="store_true",
                        help="print what the local journal holds (no network): per run what it owes, what "
                             "OneVizion refused and why; exit 0 nothing owed, 75 owed, 6 refused")
    parser.add_argument("--discard", metavar="KEY",
                        help="drop a run (with all it owes) or one record (its Log ID) from the journal for "
                             "good")
    parser.add_argument("--check", action="store_true",
                        help="a read-only preflight against the installation (and, with -i, the entries of "
                             "Integration.json): one line per check, with what to do about each problem; "
                             "exit 0 all passed (warnings allowed), 2 a problem in the schema or the files, "
                             "3 unreachable or credentials refused")
    parser.add_argument("--max-upload-mb", metavar="N", type=positive_number,
                        default=vocabulary.DEFAULT_MAX_UPLOAD_MB,
                        help="largest file uploaded from a stdout line, in MB (default: %(default)s)")
    parser.add_argument("--grace", metavar="SECONDS", type=positive_number,
                        default=vocabulary.DEFAULT_GRACE_SECONDS,
                        help="seconds between SIGTERM and SIGKILL when a child is stopped "
                             "(default: %(default)s)")
    parser.add_argument("--drain-seconds", metavar="SECONDS", type=positive_number,
                        default=vocabulary.DEFAULT_DRAIN_SECONDS,
                        help="after the last child has ended, the wrapper keeps delivering as long as "
                             "OneVizion confirms deliveries; this is how long it waits without any progress "
                             "before leaving the rest in the journal (exit 75) for the next invocation "
                             "(default: %(default)s)")
    parser.add_argument("--print-default-schema", action=_PrintDefaultSchema,
                        help="print the default Schema.json and exit")
    return parser


def adding_log_parser() -> argparse.ArgumentParser:
    """IntegrationWrapperAddingLog.py: add one Log record to an integration's running run."""
    parser = _Parser(
        prog="IntegrationWrapperAddingLog.py",
        description="Add one Log record (and optionally a file) to the running run of an "
                    "integration: -r if given, else $HUB_RUN_ID when it belongs to that "
                    "integration, else its latest Running run.")
    _add_common(parser)
    _integration_id(parser)
    parser.add_argument("-w", "--message-type", metavar="TYPE", required=True, type=message_type,
                        help="0 or Info, 1 or Warning, 2 or Error (any case)")
    parser.add_argument("-m", "--message", metavar="TEXT", required=True, type=non_empty,
                        help="the message; longer than %d characters: cut, the full text goes to "
                             "the Description" % vocabulary.MESSAGE_LIMIT)
    parser.add_argument("-f", "--file", metavar="PATH", type=readable_file,
                        help="a file to upload into the record's File field")
    parser.add_argument("-d", "--description", metavar="TEXT",
                        help="the Description (default: the full message)")
    parser.add_argument("-r", "--run-id", metavar="KEY", type=non_empty,
                        help="the Integration Run's key (default: $HUB_RUN_ID or the latest "
                             "Running run)")
    parser.add_argument("--print-id", action="store_true",
                        help="print the new record's Log ID on stdout (it is printed anyway on a terminal; "
                             "a wrapped child's stdout would make it one more record, and cron mails stdout)")
    return parser


def run_controller_parser() -> argparse.ArgumentParser:
    """IntegrationWrapperRunController.py: open (start) or close (stop) a run by hand."""
    parser = _Parser(
        prog="IntegrationWrapperRunController.py", checks=[_check_controller],
        description="Open a run of an integration (-t start: status Running; prints the run's "
                    "key alone on stdout) or close one (-t stop: Executed without Warnings, or "
                    "with Warnings for -e 1).")
    _add_common(parser)
    _integration_id(parser)
    parser.add_argument("-t", "--action", required=True, type=str.lower, choices=("start", "stop"),
                        help="start: open a Running run; stop: close a run")
    parser.add_argument("-e", "--errors", type=int, choices=(0, 1),
                        help="with -t stop: 1 = Executed with Warnings, 0 = without (default: 0)")
    parser.add_argument("-r", "--run-id", metavar="KEY", type=non_empty,
                        help="with -t stop: the run to close (default: the latest Running run)")
    parser.add_argument("--force", action="store_true",
                        help="with -t start: open a run even if the integration is disabled; with -t stop "
                             "-r: close a run that is no longer Running (rewrites its status)")
    return parser


# ---------------------------------------------------------------- cross-flag checks

def _check_wrapper(args: argparse.Namespace) -> Optional[str]:
    modes = [flag for flag, value in (("--replay", args.replay), ("--status", args.status),
                                      ("--discard", args.discard), ("--check", args.check)) if value]
    if len(modes) > 1:
        return "argument %s: not allowed with %s" % (modes[1], modes[0])
    if args.retry_refused and not args.replay:
        return "argument --retry-refused: only with --replay"
    if not modes:
        if args.integrations is None:
            return ("the following arguments are required: -i/--integrations "
                    "(unless --replay, --status, --discard or --check)")
        return None
    given = [flag for flag, value in (("-i/--integrations", args.integrations and not args.check),
                                      ("--name", args.name),
                                      ("--control-process", args.control_process),
                                      ("--allow-overlap", args.allow_overlap)) if value]
    if given:
        return "argument %s: not allowed with %s (it runs nothing)" % (modes[0], given[0])
    return None


def _check_controller(args: argparse.Namespace) -> Optional[str]:
    if args.action == "start":
        for flag, value in (("-e/--errors", args.errors), ("-r/--run-id", args.run_id)):
            if value is not None:
                return "argument %s: not allowed with -t start (only -t stop closes a run)" % flag
    elif args.force and args.run_id is None:
        return "argument --force: with -t stop only together with -r/--run-id (it rewrites a closed run)"
    if args.errors is None:
        args.errors = 0
    return None


def parse(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse `argv` (default: sys.argv[1:]), then check flag combinations.

    Any problem exits 2 with the usage and a message naming the flag(s), as argparse does.
    """
    args = parser.parse_args(argv)
    for check in getattr(parser, "checks", ()):
        problem = check(args)
        if problem:
            parser.error(problem)
    return args


# ---------------------------------------------------------------- errors → exit codes

def run_command(main: Callable[[], Optional[int]], logger=None,
                secrets: Optional[Callable[[], Iterable[str]]] = None, logger_source=None, say=None) -> int:
    """Call `main()` and return the exit code for sys.exit.

    - returns main()'s own code (None counts as 0);
    - HubError: "error: <message>" on stderr, its `exit_code`;
    - KeyboardInterrupt: "interrupted" on stderr, 130 (128 + SIGINT);
    - any other exception: one "internal error: <Type>: <text>" line on stderr, no
      traceback (cron mails stderr; the traceback goes to `logger.exception` when a
      logger is given), exit code 1 (EXIT_INTERNAL): not 2, since something may have
      run, and 1 is what the wrapper would report for a run it had to close with warnings.
    SystemExit (argparse, sys.exit) passes through untouched.

    `secrets`, if given, returns the values to mask as "***" in what is printed (e.g.
    lambda: installation.secrets()); it is called only when there is an error.
    `logger_source`, if given, returns the logger once main() has opened it; `say`, if given,
    prints the error line instead of a plain write to stderr.
    """
    def current_logger():
        return logger_source() if logger_source is not None else logger

    try:
        code = main()
        return vocabulary.EXIT_OK if code is None else code
    except HubError as exc:
        if current_logger() is not None:
            current_logger().error("%s", _redact(exc.message, secrets))
        _say("error: %s" % exc.message, secrets, say)
        return exc.exit_code
    except KeyboardInterrupt:
        _say("interrupted", None, say)
        return vocabulary.EXIT_SIGNAL_BASE + 2
    except Exception as exc:  # noqa: BLE001 - the one place that catches everything
        if current_logger() is not None:
            current_logger().exception("internal error")
        _say("internal error: %s: %s" % (type(exc).__name__, exc), secrets, say)
        return EXIT_INTERNAL


def _redact(text: str, secrets: Optional[Callable[[], Iterable[str]]]) -> str:
    if secrets is None:
        return text
    try:
        values: List[str] = [value for value in secrets() if value]
    except Exception:  # noqa: BLE001 - redaction must never hide the original error
        return text
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, "***")
    return text


def _say(text: str, secrets: Optional[Callable[[], Iterable[str]]], say=None) -> None:
    if say is not None:
        say(_redact(text, secrets))
        return
    try:
        print(_redact(text, secrets), file=sys.stderr)
    except (OSError, ValueError):  # stderr closed: the exit code still tells
        pass
