"""Reliability benchmarks (issue 10): the long fault injections that do not fit in the test suite.

    python benchmarks/reliability.py kill  [options]   # driver SIGKILLed at many points, Tuner.restore, finish
    python benchmarks/reliability.py flood [options]   # 1,000 fast trials per searcher: memory, suggest time

Each sub-command is its own module (``reliability_kill.py``, ``reliability_flood.py``; ``--help`` lists its
options); the fast versions of the same faults run in ``tests/reliability/``. Results and the commands that
produced them: ``benchmarks/results/reliability.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

SUBCOMMANDS = ("kill", "flood")


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Run the sub-command named first in ``argv`` with the remaining arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        sys.exit(f"usage: python benchmarks/reliability.py {{{','.join(SUBCOMMANDS)}}} [options]")
    if argv[0] == "kill":
        import reliability_kill as module
    else:
        import reliability_flood as module
    module.main(argv[1:])


if __name__ == "__main__":
    main()
