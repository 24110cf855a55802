"""``python -m sandbox``: serve the OneVizion sandbox until Ctrl-C or SIGTERM.

Prints one line with the URL and the credentials to use (they are the sandbox's own, published in
Passwords.example.json, not secrets). The schema flags (--drop-field ... --timezone) start it with
a schema that is wrong in chosen ways (sandbox.variants); a bad one is exit 2 with a message.
"""

from __future__ import annotations

import argparse
import signal
import sys

import sandbox
from sandbox import server, variants
from sandbox.schema import SandboxError


def parse_args(argv):
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
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
    wrong = parser.add_argument_group("a schema that is wrong in chosen ways (repeatable, except --timezone)")
    wrong.add_argument("--drop-field", action="append", metavar="[TYPE.]FIELD", dest="drop_fields",
                       help="the field does not exist, e.g. IL_FILE")
    wrong.add_argument("--field-type", action="append", metavar="FIELD=TYPE", dest="field_types",
                       help="the field has another type, e.g. IL_MESSAGE=Memo")
    wrong.add_argument("--drop-value", action="append", metavar="FIELD=VALUE", dest="drop_values",
                       help="the drop-down value does not exist, e.g. 'IR_STATUS=Executed without Warnings'")
    wrong.add_argument("--mandatory-field", action="append", metavar="[TYPE.]FIELD", dest="mandatory_fields",
                       help="a create must fill it (a new TYPE.FIELD is added as Text), "
                            "e.g. IntegrationRun.IR_APPROVER")
    wrong.add_argument("--autogen-keys", action="append", metavar="TYPE[=PREFIX]", dest="autogen_keys",
                       help="the type generates keys (a given TRACKOR_KEY is replaced), e.g. IntegrationRun")
    wrong.add_argument("--label", action="append", metavar="NAME=LABEL", dest="labels",
                       help="label of a type or field, e.g. 'IntegrationRun=Integration Runs'")
    wrong.add_argument("--field-length", action="append", metavar="FIELD=N", dest="field_lengths",
                       help="most characters of a Text or Memo field, e.g. IL_MESSAGE=100")
    wrong.add_argument("--timezone", metavar="ZONE",
                       help="the installation's PrimaryTimezone (default %s)" % variants.DEFAULT_TIMEZONE)
    return parser


def schema_settings(args) -> dict:
    """sandbox.variants settings from the schema flags; SandboxError(400) naming a malformed one."""
    settings = {}
    if args.drop_fields:
        settings["drop_fields"] = args.drop_fields
    if args.mandatory_fields:
        settings["mandatory_fields"] = args.mandatory_fields
    for key, flag in (("field_types", "--field-type"), ("labels", "--label"),
                      ("field_lengths", "--field-length"), ("drop_values", "--drop-value"),
                      ("autogen_keys", "--autogen-keys")):
        for item in getattr(args, key) or []:
            name, sep, value = item.partition("=")
            if key == "autogen_keys" and not sep:
                value = None
            elif not sep or not name.strip() or not value.strip():
                raise SandboxError(400, "%s takes NAME=VALUE, not %r" % (flag, item))
            if key == "field_lengths":
                if not value.strip().isdigit():
                    raise SandboxError(400, "%s takes FIELD=N with N a whole number, not %r" % (flag, item))
                value = int(value)
            bucket = settings.setdefault(key, {})
            if key == "drop_values":
                bucket.setdefault(name.strip(), []).append(value)
            else:
                bucket[name.strip()] = value.strip() if isinstance(value, str) else value
    if args.timezone is not None:
        settings["timezone"] = args.timezone
    return settings


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        httpd = server.make_server(
            args.db, args.host, args.port, args.integrations, args.passwords, args.verbose,
            latency_ms=args.latency_ms, error_rate=args.error_rate, error_status=args.error_status,
            drop_rate=args.drop_rate, drop_after_commit=args.drop_after_commit, seed=args.seed,
            **schema_settings(args))
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
        httpd.stopping.set()
        httpd.server_close()
        httpd.store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
