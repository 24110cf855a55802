#!/usr/bin/env python3
"""The one-command demo: a fresh OneVizion sandbox, the example integrations run through
IntegrationWrapper.py against it, a summary of what arrived, and the page that shows it.

    python3 demo.py                 run, print the summary and the page's URL, serve until Ctrl-C
    python3 demo.py --no-wait       the same, then stop the sandbox and exit
    python3 demo.py --port 8091     another port (a temporary Passwords.json points the hub there)

Exit codes: 0 the demo behaved as expected (every example integration got a finished run with log
records, and the wrapper exited 0 or 1: the nightly export fails on purpose, so its run ends
"Executed with Warnings" and the wrapper exits 1); 1 something else happened (the summary and
the wrapper's output say what); 2 bad flags, the port is taken, or the sandbox did not start;
130 interrupted while the integrations ran. The sandbox is stopped on every way out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
PASSWORDS_EXAMPLE = os.path.join(REPO_ROOT, "Passwords.example.json")
INTEGRATIONS_EXAMPLE = os.path.join(REPO_ROOT, "Integration.example.json")
DEFAULT_PORT = 8080
HOST = "127.0.0.1"
START_TIMEOUT = 15.0
WRAPPER_TIMEOUT = 300.0


class DemoError(Exception):
    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.message, self.code = message, code


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="demo.py", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="port for the sandbox (default %d)" % DEFAULT_PORT)
    parser.add_argument("--no-wait", action="store_true",
                        help="stop the sandbox and exit after the summary instead of serving until Ctrl-C")
    parser.add_argument("--db", default=None,
                        help="SQLite file for the sandbox (default: a temporary one; an existing file is replaced)")
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error("--port must be between 1 and 65535")
    return args


def port_free(port: int) -> bool:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # As the sandbox binds: with SO_REUSEADDR, a listening socket still makes this fail, while
        # connections of an earlier run waiting in TIME_WAIT do not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


def write_passwords(folder: str, url: str) -> str:
    with open(PASSWORDS_EXAMPLE, encoding="utf-8") as source:
        passwords = json.load(source)
    passwords["installation"]["URL"] = url
    path = os.path.join(folder, "Passwords.json")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as out:
        json.dump(passwords, out, indent=2)
    return path


class Sandbox:
    """``python3 -m sandbox`` as a child process in its own session (Ctrl-C does not reach it;
    the demo stops it itself, after the wrapper closed its runs)."""

    def __init__(self, port: int, db: str, folder: str):
        self.url = "http://%s:%d" % (HOST, port)
        self.stderr_path = os.path.join(folder, "sandbox.err")
        self.stderr = open(self.stderr_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sandbox", "--host", HOST, "--port", str(port), "--db", db],
            cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr,
            start_new_session=True)

    def wait_ready(self, timeout: float = START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DemoError("the sandbox stopped at start (exit %s): %s"
                                % (self.process.returncode, self.error_text() or "no message"))
            try:
                if get_json(self.url + "/_sandbox/health", timeout=1.0).get("ok"):
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise DemoError("the sandbox did not answer on %s within %.0f s" % (self.url, timeout))

    def error_text(self) -> str:
        self.stderr.flush()
        with open(self.stderr_path, encoding="utf-8", errors="replace") as source:
            return source.read().strip()

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()  # the sandbox stops on SIGTERM and closes its database
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.stderr.close()


def run_wrapper(passwords: str, log_dir: str) -> int:
    """IntegrationWrapper.py on the example integrations; its output goes straight to the terminal."""
    argv = [sys.executable, os.path.join(REPO_ROOT, "IntegrationWrapper.py"),
            "-p", passwords, "-i", INTEGRATIONS_EXAMPLE, "--log-dir", log_dir]
    process = subprocess.Popen(argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL)
    try:
        return process.wait(WRAPPER_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.terminate()
        process.wait(30)
        raise DemoError("IntegrationWrapper.py did not finish within %.0f s" % WRAPPER_TIMEOUT, 1)
    except KeyboardInterrupt:
        # Ctrl-C reaches the wrapper too (same process group); a kill aimed at the demo alone does
        # not, so pass it on (a second signal is harmless). Let the wrapper close its runs first.
        try:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            process.wait(30)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            process.kill()
            process.wait()
        raise


def summary(url: str, expected_names):
    """(lines to print, whether every expected integration got a finished run with records)."""
    integrations = get_json(url + "/_sandbox/trackors/Integration")
    runs = get_json(url + "/_sandbox/trackors/IntegrationRun")
    logs = get_json(url + "/_sandbox/trackors/IntegrationLog")
    names = {i["TRACKOR_ID"]: i.get("INT_NAME") or i["TRACKOR_KEY"] for i in integrations}
    counts, types = {}, {}
    for log in logs:
        counts[log["_parent_id"]] = counts.get(log["_parent_id"], 0) + 1
        kinds = types.setdefault(log["_parent_id"], {})
        kinds[log.get("IL_MESSAGE_TYPE")] = kinds.get(log.get("IL_MESSAGE_TYPE"), 0) + 1
    rows = [("Integration", "Run", "Status", "Records", "Page")]
    ok_names = set()
    for run in runs:
        name = names.get(run["_parent_id"], run.get("_parent_key"))
        kinds = types.get(run["TRACKOR_ID"], {})
        detail = ", ".join("%d %s" % (kinds[k], (k or "?").lower()) for k in ("Info", "Warning", "Error") if k in kinds)
        rows.append((name, run["TRACKOR_KEY"], run.get("IR_STATUS") or "?",
                     "%d%s" % (counts.get(run["TRACKOR_ID"], 0), " (%s)" % detail if detail else ""),
                     "%s/ui/run/%d" % (url, run["TRACKOR_ID"])))
        if run.get("IR_STATUS") not in (None, "Running") and counts.get(run["TRACKOR_ID"], 0):
            ok_names.add(name)
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(value).ljust(width) for value, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines, all(name in ok_names for name in expected_names)


def expected_names():
    with open(INTEGRATIONS_EXAMPLE, encoding="utf-8") as source:
        return [entry["IntegrationName"] for entry in json.load(source)]


def wait_for_interrupt():
    """Until Ctrl-C (SIGINT) or SIGTERM / SIGHUP (see install_signal_handlers)."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def install_signal_handlers():
    """Ctrl-C, SIGTERM and SIGHUP all end the demo through its cleanup (the sandbox runs in its own
    session, so nothing else stops it). SIGINT is set explicitly: a shell starts a background job
    with SIGINT ignored, and `kill -INT` must still work then."""
    def stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), stop)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not port_free(args.port):
        print("demo: port %d on %s is already in use (another sandbox or demo still running?). "
              "Stop it, or choose another port: python3 demo.py --port %d"
              % (args.port, HOST, args.port + 1), file=sys.stderr)
        return 2
    install_signal_handlers()
    folder = tempfile.mkdtemp(prefix="hub-demo-")
    sandbox = None
    try:
        db = args.db or os.path.join(folder, "sandbox.db")
        for suffix in ("", "-wal", "-shm"):  # fresh data each time
            if os.path.exists(db + suffix):
                os.remove(db + suffix)
        print("Starting the OneVizion sandbox on http://%s:%d ..." % (HOST, args.port), flush=True)
        sandbox = Sandbox(args.port, db, folder)
        sandbox.wait_ready()
        page = sandbox.url + "/"
        passwords = PASSWORDS_EXAMPLE if args.port == DEFAULT_PORT else write_passwords(folder, sandbox.url)
        log_dir = os.path.join(folder, "log")
        print("Sandbox up. Watch the runs live at %s" % page, flush=True)
        print("Running: python3 IntegrationWrapper.py -p %s -i Integration.example.json --log-dir %s\n"
              % (os.path.relpath(passwords, REPO_ROOT) if passwords == PASSWORDS_EXAMPLE else passwords, log_dir),
              flush=True)
        code = run_wrapper(passwords, log_dir)
        lines, complete = summary(sandbox.url, expected_names())
        print("\nIntegrationWrapper.py exited with %d%s" % (
            code, " (expected: the nightly export fails on purpose, so its run has warnings)" if code == 1 else ""))
        print("\nRuns in the sandbox:\n")
        print("\n".join("  " + line for line in lines))
        print("\nThe page: %s" % page, flush=True)
        behaved = complete and code in (0, 1)
        if not behaved:
            print("\ndemo: not as expected: %s; the wrapper's log is in %s"
                  % ("the wrapper exited %d" % code if code not in (0, 1) else "an example integration has no finished run with records",
                     log_dir), file=sys.stderr)
        if not args.no_wait:
            print("\nServing until Ctrl-C (user %s, password as in Passwords.example.json)."
                  % _user_name(), flush=True)
            wait_for_interrupt()
            print("\nStopping the sandbox.", flush=True)
        return 0 if behaved else 1
    except DemoError as error:
        print("demo: %s" % error.message, file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        print("\ndemo: interrupted; stopping the sandbox.", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        try:
            if sandbox is not None:
                sandbox.stop()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _user_name() -> str:
    try:
        with open(PASSWORDS_EXAMPLE, encoding="utf-8") as source:
            return json.load(source)["installation"]["UserName"]
    except (OSError, ValueError, KeyError):
        return "?"


if __name__ == "__main__":
    sys.exit(main())
