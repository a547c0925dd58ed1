"""Command line: ``confkd <stage>`` runs one pipeline stage; ``confkd check-params`` validates params.

``confkd distill --config NAME`` runs one distillation configuration from params.yaml;
``confkd predict --model DIR "some text" ...`` (or ``--file texts.txt``) prints class probabilities;
DIR may be a saved model folder or an exported one (``models/export/<name>``, run with ONNX Runtime).
"""

from __future__ import annotations

import argparse
import logging
import sys

from confkd.config import load_params
from confkd.errors import ConfkdError, ParamsError
from confkd.runtime import setup_logging

log = logging.getLogger("confkd")


def main(argv: list[str] | None = None) -> int:
    from confkd.pipeline import PER_CONFIG, STAGES

    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["predict"]:
        return predict_main(argv[1:])
    parser = argparse.ArgumentParser(prog="confkd", description=__doc__)
    parser.add_argument("command", choices=[*STAGES, "check-params", "predict"])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--config", help="configuration name, for per-configuration stages such as distill")
    parser.add_argument("--only", nargs="+", metavar="CONFIG",
                        help="report: cover only these configurations (a subset report; the others are listed as left out)")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        params = load_params(args.params)
        setup_logging(params.runtime.log_level)
        if args.command == "check-params":
            return check_params(args.params, params)
        if args.command in TASK_READERS:
            _check_before_stage(params)
        if args.only is not None and args.command != "report":
            raise ParamsError("--only applies to the report stage")
        if args.command in PER_CONFIG:
            STAGES[args.command](params, args.config)
        elif args.command == "report":
            STAGES[args.command](params, args.only)
        else:
            STAGES[args.command](params)
    except ConfkdError as err:
        log.error("%s", err)
        return 1
    return 0


def predict_main(argv: list[str]) -> int:
    """Probabilities for raw texts from a saved model, one JSON object per line."""
    import json

    parser = argparse.ArgumentParser(prog="confkd predict", description="class probabilities for raw texts")
    parser.add_argument("--model", required=True,
                        help="a saved model folder (teacher, transformer student or DAN) or an exported one (models/export/NAME)")
    parser.add_argument("--file", help="read texts from this file, one per line ('-' = stdin)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="truncate longer texts (tokens; default: the export's setting, or 128 for saved folders)")
    parser.add_argument("--precision", choices=["auto", "fp32", "int8"], default="auto",
                        help="exported folders only: which ONNX graph to run (auto = int8 when exported, else fp32)")
    parser.add_argument("--threads", type=int, default=None,
                        help="exported folders only: ONNX Runtime intra-op threads (default: all cores)")
    parser.add_argument("texts", nargs="*")
    args = parser.parse_args(argv)
    setup_logging("WARNING")
    try:
        from confkd.errors import DataError
        from confkd.inference import load_predictor

        texts = list(args.texts)
        if args.file:
            stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
            with stream:
                texts += [line.rstrip("\n") for line in stream if line.strip()]
        if not texts:
            raise DataError("no texts given (pass them as arguments or with --file)")
        predictor = load_predictor(args.model, max_length=args.max_length, precision=args.precision,
                                   num_threads=args.threads)
        for text, probs in zip(texts, predictor.predict_proba(texts)):
            print(json.dumps({"text": text, "label": predictor.labels[int(probs.argmax())],
                              "probabilities": {l: round(float(p), 6) for l, p in zip(predictor.labels, probs)}}))
    except ConfkdError as err:
        log.error("%s", err)
        return 1
    except OSError as err:
        log.error("%s", err)
        return 1
    return 0


def check_params(source: str, params) -> int:
    """The schema passed; now the task against its files and each configuration. 1 on any error."""
    from confkd.data.checks import ERROR, check_configs, check_task

    findings = check_task(params) + check_configs(params)
    for f in findings:
        print(f"{source}: {f}")
    errors = sum(f.severity == ERROR for f in findings)
    if errors:
        print(f"{source}: {errors} error(s): nothing was run")
        return 1
    print(f"{source}: OK" + (f" ({len(findings)} warning(s))" if findings else ""))
    return 0


TASK_READERS = {"prepare"}  # the stage that reads the task's own files (the others read data/prepared)


def _check_before_stage(params) -> None:
    """The task checked against its files before any work (errors raise, warnings are logged)."""
    from confkd.data.checks import ERROR, check_task
    from confkd.errors import ParamsError

    findings = check_task(params, balance=False)  # class shares: the validate stage's job, with its report
    for f in findings:
        if f.severity != ERROR:
            log.warning("%s: %s", f.key, f.message)
    errors = [f for f in findings if f.severity == ERROR]
    if errors:
        raise ParamsError("the task does not match its files (run `confkd check-params`):\n"
                          + "\n".join(f"  - {f.key}: {f.message}" for f in errors))


def stage_main(stage: str) -> None:
    """Entry point for the thin scripts in ``stages/``."""
    sys.exit(main([stage, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
