#!/usr/bin/env python3
"""A fake `gc-info` for the IPU source's tests: copied by the test into a temporary folder as an executable
named `gc-info`, next to a `gc-info.json` saying what to do:

{"mode": "record", "text": PATH}  print the recorded `gc-info --device-info` text (without the recorded
                                  `$ gc-info ...` command line), exit 0;
{"mode": "fail"}                  print a reason on stderr, exit 3;
{"mode": "hang", "pids": PATH}    start a child, write both PIDs to PATH, sleep for an hour;
{"mode": "garbage"}               print text that is no device listing;
{"mode": "huge"}                  print 50 MB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main() -> int:
    if sys.argv[1:] != ["--device-info"]:
        print(f"gc-info: unexpected arguments {sys.argv[1:]}", file=sys.stderr)
        return 2
    with open(os.path.realpath(sys.argv[0]) + ".json") as handle:
        config = json.load(handle)
    mode = config["mode"]
    if mode == "record":
        with open(config["text"]) as handle:
            lines = handle.read().splitlines(keepends=True)
        sys.stdout.write("".join(line for line in lines if not line.startswith("$ ")))
        return 0
    if mode == "fail":
        print("Error: could not open the IPU driver (no IPU attached)", file=sys.stderr)
        return 3
    if mode == "hang":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        with open(config["pids"], "w") as handle:
            handle.write(f"{os.getpid()} {child.pid}\n")
        time.sleep(3600)
        return 0
    if mode == "garbage":
        sys.stdout.write("\x00\x01 segmentation fault (core dumped)\nnothing: here\n")
        return 0
    if mode == "huge":
        chunk = "clock: 1330MHz\n" * 4096
        for _ in range(50 * 2**20 // len(chunk) + 1):
            sys.stdout.write(chunk)
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
