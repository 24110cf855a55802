"""Benchmark child: print N numbered lines of ~100 bytes as fast as it can.

    python3 flood_child.py N TIMES_FILE

Writes "start end cpu" to TIMES_FILE: epoch floats before the first line and after the final
flush, and the CPU seconds the child used meanwhile (wall > cpu: it waited, for the pipe or a core).
"""
import sys
import time


def flood_line(i: int) -> str:
    """Line i (1-based) without its newline: ~100 bytes, numbered, so order can be checked."""
    return "line %06d " % i + "x" * 88


def main() -> int:
    count, times_file = int(sys.argv[1]), sys.argv[2]
    start, cpu = time.time(), time.process_time()
    write = sys.stdout.write
    for i in range(1, count + 1):
        write(flood_line(i) + "\n")
    sys.stdout.flush()
    end, cpu = time.time(), time.process_time() - cpu
    with open(times_file, "w") as out:
        out.write("%r %r %r\n" % (start, end, cpu))
    return 0


if __name__ == "__main__":
    sys.exit(main())
