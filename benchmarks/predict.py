"""The predictions, each beside its baseline fitted in the same run: one command.

    .venv/bin/python benchmarks/predict.py [--quick] [--json FILE]

1. Purchase likelihood on CDNOW (the copy inside the `lifetimes` wheel), time splits at
   1997-06-30, 1997-09-30 and 1997-12-31 with the holdout to 1998-06-30, trained only on what came
   before the cutoff, beside BG/NBD (lifetimes), recency alone, the population rate and a tuned
   gradient-boosted reference that sees other customers' holdout labels (benchmarks/_predict_purchase.py).
2. Next best products and best send time on planted synthetic populations and on MovieLens 100k,
   beside "most popular", "user's most viewed", "global mode hour" and "user's mode hour"
   (benchmarks/_predict_items.py).
3. Learned frequency caps in a closed loop over users with planted fatigue curves, beside the best
   single cap chosen with hindsight (benchmarks/_predict_fatigue.py).

`--quick` leaves out the reference GBM's grid search (most of the time) and runs the closed loop on
1,500 users over 56 days instead of 4,000 over 84. Every figure of docs/performance.md's
"Predictions" section comes from this command.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _predict_fatigue as fatigue  # noqa: E402 - the benchmark's parts, beside this file
import _predict_items as items  # noqa: E402
import _predict_purchase as purchase  # noqa: E402


def fatigue_table(result: dict) -> str:
    lines = [f"Learned caps: {result['users']} users over {result['days']} days (seed {result['seed']}), "
             f"fit {result['seconds']['fit']} s, {result['score_us']} us per cap"]
    for channel in ("push", "email"):
        r = result.get(channel)
        if not isinstance(r, dict) or "learned_net" not in r:
            continue
        lines.append(f"  {channel} ({r['users']:,} users): net engagement learned {r['learned_net']:,.0f} "
                     f"(opens {r['learned_opens']:,.0f}, unsubscribes {r['learned_unsubscribes']:,.0f}) vs best "
                     f"fixed cap {r['fixed_cap']} {r['fixed_net']:,.0f} ({r['fixed_opens']:,.0f}, "
                     f"{r['fixed_unsubscribes']:,.0f}); planted caps (ceiling) {r['oracle_net']:,.0f}")
        lines.append(f"    cap error: learned {r['cap_mae']:.2f} (exact {r['cap_exact']:.0%}, within 1 "
                     f"{r['cap_within_1']:.0%}) vs best fixed {r['fixed_cap_mae']:.2f} (within 1 "
                     f"{r['fixed_cap_within_1']:.0%})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="no reference GBM; a smaller closed loop")
    p.add_argument("--json", type=Path, help="write every figure here")
    args = p.parse_args(argv)
    out: dict = {}
    began = time.perf_counter()
    out["purchase"] = purchase.run(reference=not args.quick)
    purchase.print_results(out["purchase"])
    print()
    out["items"] = items.run()
    print(items.table(out["items"]))
    users, days = (1500, 56) if args.quick else (4000, 84)
    out["fatigue"] = fatigue.run(users, days, 1)
    print(fatigue_table(out["fatigue"]))
    print(f"\n{time.perf_counter() - began:.0f} s in all")
    if args.json:
        args.json.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
                                           | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
