"""``python -m sandbox``: serve the OneVizion sandbox until Ctrl-C or SIGTERM.

Prints one line with the URL and the credentials to use (they are the sandbox's own, published in
Passwords.example.json, not secrets).
"""

from __future__ import annotations

import argparse
import signal
import sys

import sandbox
from sandbox import server
from sandbox.schema import SandboxError


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    parser.add_argument("--db", default="sandbox.db", help="SQLite file (default sandbox.db; :memory: allowed)")
    parser.add_argument("--integrations", default=sandbox.INTEGRATIONS_EXAMPLE,
                        help="Integration.json whose entries seed the Integration trackors")
    parser.add_argument("--passwords", default=sandbox.PASSWORDS_EXAMPLE,
                        help="Passwords.json whose installation UserName/Password are accepted")
    parser.add_argument("--latency-ms", type=float, default=0, help="delay per API request")
    parser.add_argument("--error-rate", type=float, default=0, help="share of API requests answered with an error")
    parser.add_argument("--error-status", type=int, default=500, choices=(500, 502, 503, 504))
    parser.add_argument("--drop-rate", type=float, default=0, help="share of API connections closed unanswered")
    parser.add_argument("--drop-after-commit", action="store_true", help="drop only after processing")
    parser.add_argument("--seed", type=int, default=None, help="random seed for the fault draws")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        httpd = server.make_server(
            args.db, args.host, args.port, args.integrations, args.passwords, args.verbose,
            latency_ms=args.latency_ms, error_rate=args.error_rate, error_status=args.error_status,
            drop_rate=args.drop_rate, drop_after_commit=args.drop_after_commit, seed=args.seed)
    except OSError as error:
        print("sandbox: cannot listen on %s:%s: %s" % (args.host, args.port, error), file=sys.stderr)
        return 1
    except SandboxError as error:
        print("sandbox: %s" % error.message, file=sys.stderr)
        return 2
    host, port = httpd.server_address[:2]
    user, password = httpd.credentials[:2]
    print("OneVizion sandbox on http://%s:%d  user %s  password %s  (token %s:%s)"
          % (host, port, user, password, sandbox.ACCESS_KEY, sandbox.SECRET_KEY), flush=True)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        httpd.store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
