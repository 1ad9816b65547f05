"""Run the shotline command line with one recovery point armed: the process kills itself
(SIGKILL) when it gets there, as a power cut would.

    python tests/killpoint.py POINT ARGS...        runs `shotline ARGS...`

POINT is a name ``engine/renderer.checkpoint`` is called with (claimed,
submitted-uncommitted, submitted, downloaded, done, stitched). Production code reads no
kill switch: ``checkpoint`` does nothing there, and only this entry point, in its own
process, replaces it.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve()


def main() -> None:
    point, args = sys.argv[1], sys.argv[2:]

    from shotline import cli
    from shotline.engine import renderer

    def checkpoint(name: str) -> None:
        if name == point:
            os.kill(os.getpid(), signal.SIGKILL)

    renderer.checkpoint = checkpoint
    sys.exit(cli.run(args))


if __name__ == "__main__":
    main()
