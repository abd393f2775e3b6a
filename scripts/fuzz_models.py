#!/usr/bin/env python
"""Long fuzz runs: mutate the real models of models.md thousands of times, build what survives.

    .venv/bin/python scripts/fuzz_models.py --cases 2000 --build --out fuzz_report.json

Prints progress, then a JSON summary; exits 1 if any case crashed, hung, leaked a trace or hit an
internal error. Reproduce one case with --seed-start N --cases 1 --bases BASE.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fuzz.harness import BASES, run_cases, summarize  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed-start", type=int, default=10_000)
    parser.add_argument("--bases", default=",".join(BASES), help="comma-separated base models")
    parser.add_argument("--build", action="store_true", help="also generate code (LLVM) for cases that compile")
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", help="write the JSON summary here too")
    args = parser.parse_args()

    started = time.monotonic()

    def progress(outcome, done, total):
        if not outcome.good or done % 50 == 0:
            print(f"[{done}/{total} {time.monotonic() - started:.0f}s] seed {outcome.seed} {outcome.base}: "
                  f"{outcome.status} ({outcome.mutation}) {outcome.detail[:160]}", flush=True)

    seeds = list(range(args.seed_start, args.seed_start + args.cases))
    outcomes = run_cases(seeds, args.bases.split(","), build=args.build, timeout=args.timeout, jobs=args.jobs,
                         progress=progress)
    summary = summarize(outcomes)
    summary["seconds"] = round(time.monotonic() - started, 1)
    summary["build"] = args.build
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
