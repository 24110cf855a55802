"""Benchmark child: a steady stream of lines, RATE a second for SECONDS, flushed as they go.

    python3 steady_child.py RATE SECONDS
"""
import sys
import time


def main() -> int:
    rate, seconds = int(sys.argv[1]), float(sys.argv[2])
    first, n = time.time(), 0
    pad = "y" * 80
    while time.time() - first < seconds:
        due = int((time.time() - first) * rate)
        while n < due:
            n += 1
            sys.stdout.write("steady %07d %s\n" % (n, pad))
        sys.stdout.flush()
        time.sleep(0.01)
    return 0


if __name__ == "__main__":
    sys.exit(main())
