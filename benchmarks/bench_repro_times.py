"""How long each stage of a `dvc repro` took, read from the run's own log.

    dvc repro 2>&1 | tee repro.log
    python benchmarks/bench_repro_times.py repro.log [more.log ...] [--name sst2_default]

A stage runs from the first timestamped log line after DVC's "Running stage 'X':" to the first timestamped line
of the next stage (the stages' logging prints ``HH:MM:SS`` first). So a figure includes the stage's own start-up
(imports, reading inputs) up to its first log line only approximately (a few seconds), and DVC's own work
between stages (hashing, caching the outputs) counts towards the stage before. The last stage of a log ends at
the log's last timestamp. A run spread over several logs (an interrupted repro, resumed) is summed. A stage
interrupted in one log and completed in a later one counts both: the time of its interrupted attempts is shown
in its own column and included in the total (training stages resume from their last checkpoint, so that time
was part of the stage's work; a stage that started over counts its lost attempt too, as time the run took).

Writes benchmarks/results/repro_times_<name>.{md,json}.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from _common import machine, write_results

RUNNING = re.compile(r"Running stage '([^']+)'")
STAMP = re.compile(r"^(?:\x1b\[[0-9;]*[A-Za-z]|\s)*(\d\d):(\d\d):(\d\d) ")  # after any cursor-moving escapes of a progress bar


def stage_seconds(text: str) -> tuple[dict[str, float], str | None]:
    """``({stage: seconds}, the stage the log ended in or None)`` from one log (stages in the order they ran)."""
    events: list[tuple[str, str | int]] = []
    for line in text.splitlines():
        for chunk in line.split("\r"):  # progress bars rewrite their line with carriage returns
            match = RUNNING.search(chunk)
            if match:
                events.append(("stage", match.group(1)))
                continue
            stamp = STAMP.match(chunk)
            if stamp:
                h, m, s = (int(x) for x in stamp.groups())
                events.append(("time", h * 3600 + m * 60 + s))
    spans: dict[str, list[int]] = {}
    current, day = None, 0
    last = None
    for kind, value in events:
        if kind == "stage":
            current = str(value)
            spans[current] = []
            continue
        t = int(value) + day
        if last is not None and t < last - 6 * 3600:  # past midnight
            day += 86400
            t += 86400
        last = t
        if current is not None:
            spans[current].append(t)
    names = list(spans)
    out = {}
    for i, name in enumerate(names):
        times = spans[name]
        if not times:
            continue
        nxt = next((spans[n][0] for n in names[i + 1:] if spans[n]), None)
        out[name] = float((nxt if nxt is not None else times[-1]) - times[0])
    ended_in = names[-1] if names and "Updating lock file" not in text.rsplit("Running stage", 1)[-1] else None
    return out, ended_in


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+", type=Path)
    parser.add_argument("--name", default="sst2_default")
    parser.add_argument("--note", action="append", default=[], help="a line to add under the table (conditions)")
    args = parser.parse_args()
    seconds: dict[str, float] = {}
    source: dict[str, str] = {}
    interrupted: dict[str, float] = {}  # seconds of attempts cut off by the end of a log
    unfinished: list[str] = []
    for log in args.logs:
        found, ended_in = stage_seconds(log.read_text(errors="replace"))
        for stage, sec in found.items():
            if stage == ended_in:
                unfinished.append(f"{stage} ({log.name}, {sec / 60:.1f} min)")
                interrupted[stage] = interrupted.get(stage, 0.0) + sec
                continue
            seconds[stage], source[stage] = sec, log.name
    never_completed = [s for s in interrupted if s not in seconds]
    total = sum(seconds.values()) + sum(interrupted.values())
    lines = [f"# Stage times of a `dvc repro` (`{args.name}`)", "",
             f"Machine: {machine()}. Command: `python benchmarks/bench_repro_times.py "
             f"{' '.join(p.name for p in args.logs)} --name {args.name}` on the logs of the run "
             "(`dvc repro 2>&1 | tee <log>`). Each figure runs from a stage's first log line to the next stage's "
             "(start-up and DVC's caching between stages included, to a few seconds); a stage interrupted and "
             "resumed adds the minutes of its interrupted attempts.", "",
             "| stage | minutes | of which in interrupted attempts | log |", "|---|---|---|---|"]
    lines += [f"| {stage} | {(sec + interrupted.get(stage, 0.0)) / 60:.1f} | "
              f"{interrupted[stage] / 60:.1f} | {source[stage]} |" if stage in interrupted else
              f"| {stage} | {sec / 60:.1f} | | {source[stage]} |" for stage, sec in seconds.items()]
    lines += [f"| **total ({len(seconds)} stages)** | **{total / 60:.1f}** ({total / 3600:.2f} h) | "
              f"{sum(interrupted.values()) / 60:.1f} | |"]
    if unfinished:
        lines += ["", f"Interrupted attempts (counted in the total): {', '.join(unfinished)}."]
    if never_completed:
        lines += ["", f"Not completed in these logs: {', '.join(never_completed)}."]
    lines += [""] + [f"- {note}" for note in args.note] if args.note else []
    write_results(f"repro_times_{args.name}", {"stages": seconds, "interrupted_seconds": interrupted,
                                               "total_seconds": total, "unfinished": unfinished,
                                               "never_completed": never_completed}, lines)


if __name__ == "__main__":
    main()
