"""Benchmark child: print one line every INTERVAL seconds, COUNT times, each carrying its print time.

    python3 trickle_child.py [COUNT [INTERVAL]]      (default 100 lines, 0.1 s apart)

Each line is "tick NNN at <epoch float>", flushed at once.
"""
import sys
import time


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    interval = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
    first = time.time()
    for i in range(count):
        # Sleep to a fixed schedule, so the lines stay INTERVAL apart whatever a print costs.
        time.sleep(max(0.0, first + i * interval - time.time()))
        print("tick %03d at %.6f" % (i, time.time()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
