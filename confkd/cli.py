"""Command line: ``confkd <stage>`` runs one pipeline stage; ``confkd check-params`` validates params.

``confkd distill --config NAME`` runs one distillation configuration from params.yaml.
"""

from __future__ import annotations

import argparse
import logging
import sys

from confkd.config import load_params
from confkd.errors import ConfkdError
from confkd.runtime import setup_logging

log = logging.getLogger("confkd")


def main(argv: list[str] | None = None) -> int:
    from confkd.pipeline import PER_CONFIG, STAGES

    parser = argparse.ArgumentParser(prog="confkd", description=__doc__)
    parser.add_argument("command", choices=[*STAGES, "check-params"])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--config", help="configuration name, for per-configuration stages such as distill")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        params = load_params(args.params)
        setup_logging(params.runtime.log_level)
        if args.command == "check-params":
            print(f"{args.params}: OK")
            return 0
        if args.command in PER_CONFIG:
            STAGES[args.command](params, args.config)
        else:
            STAGES[args.command](params)
    except ConfkdError as err:
        log.error("%s", err)
        return 1
    return 0


def stage_main(stage: str) -> None:
    """Entry point for the thin scripts in ``stages/``."""
    sys.exit(main([stage, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
