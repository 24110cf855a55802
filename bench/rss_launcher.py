"""Run a script in this very process, then write this process's peak RSS (KiB) and its own CPU
time (user + system seconds, its children not counted) to a file.

    python3 rss_launcher.py FIGURES_FILE SCRIPT [ARG ...]

The figure is VmHWM from /proc/self/status: the high-water mark of this process's own
memory, not of the children it starts. Not ru_maxrss: on Linux, exec folds the replaced
image's high-water mark into it, so it would report the size of the (large) benchmark
process that forked this one.
"""
import os
import resource
import runpy
import sys


def peak_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    rss_file, script = sys.argv[1], sys.argv[2]
    sys.argv = sys.argv[2:]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        times = os.times()
        with open(rss_file, "w") as out:
            out.write("%d %.3f\n" % (peak_kib(), times.user + times.system))


if __name__ == "__main__":
    main()
