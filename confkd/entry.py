"""The ``confkd`` command: pipeline stages and tools (``confkd.cli``), and commands that compare runs.

Kept apart from ``confkd.cli``, which every DVC stage imports, so that adding a command here never
changes a stage's dependencies (and never reruns the pipeline).
"""

from __future__ import annotations

import sys

EXTRA = {"pr-report": "confkd.prreport", "init-task": "confkd.inittask", "claims": "confkd.claims"}  # command -> module with main(argv) -> int


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in EXTRA:
        import importlib

        return importlib.import_module(EXTRA[argv[0]]).main(argv[1:])
    from confkd.cli import main as stages_main

    return stages_main(argv)


if __name__ == "__main__":
    sys.exit(main())
