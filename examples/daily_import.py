"""Example integration: an import that reads rows, warns about one, and leaves a report file.

Prints a line every half second so that a person watching the sandbox page sees the run live.
"""
import argparse
import os
import sys
import tempfile
import time

parser = argparse.ArgumentParser()
parser.add_argument("--rows", type=int, default=5)
parser.add_argument("--pause", type=float, default=0.5)
args = parser.parse_args()

print(f"Starting import of {args.rows} rows", flush=True)
for row in range(1, args.rows + 1):
    time.sleep(args.pause)
    print(f"Imported row {row} of {args.rows}", flush=True)
    if row == 2:
        print("WARNING: row 2 has no site code, used the default", flush=True)

report = os.path.join(tempfile.gettempdir(), f"daily_import_report_{os.getpid()}.csv")
with open(report, "w") as out:
    out.write("row,status\n" + "".join(f"{r},imported\n" for r in range(1, args.rows + 1)))
print(report, flush=True)
print(f"Import finished: {args.rows} rows", flush=True)
sys.exit(0)
