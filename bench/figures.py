"""The counters /metrics derives from history, at scale: the tally against grouping every history row.

    python -m bench.figures --tasks 1000000 --engine sqlite

On the data set `bench.locate` builds (reused), in-process: the tally of history rows by kind is emptied and
advanced from nothing (``services.advance_history_tally``, timed once: what the first run of beat's
``crux.history_tally`` does on an upgraded database), then each measure runs ``--runs`` times after a warm-up.
Baseline in the same run: every history row grouped by kind, what each scrape read before the tally. The tally is
also measured with the last ``--above`` history rows above its mark (the mark moved back by them, the tally kept
consistent), as a scrape finds it when beat's advance is a while behind.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from bench.dataset import configure, ensure, git_revision
from bench.report import record, report_timings

BASELINE = "baseline: every history row grouped by kind"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--above", type=int, default=10_000, help="history ids above the mark, second measure")
    args = parser.parse_args()
    os.environ["ALLOWED_HOSTS"] = "testserver"
    configure(args.engine, f"crux_bench_{args.tasks}", fresh=False)
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.test import Client

    from tasks.models import HistoryTally, HistoryTallyMark, TaskHistory
    from tasks.selectors import count_history_by_kind
    from tasks.services import advance_history_tally
    from tasks.services.tally import add_to_tally, locked_mark

    ensure(args.tasks)
    staff = get_user_model().objects.filter(username="bench-staff").first()
    if staff is None:
        staff = get_user_model().objects.create_user("bench-staff", is_staff=True)
    client = Client()
    client.force_login(staff)

    def scrape() -> None:
        assert client.get("/metrics").status_code == 200

    def rewind(ids: int) -> int:
        """Move the mark back by ``ids`` history ids, taking their rows off the tally (consistent, as if beat's
        advance had not counted them yet); returns how many rows that is."""
        with transaction.atomic():
            upto = locked_mark().upto - ids
            above = count_history_by_kind(above=upto)
            add_to_tally(above, sign=-1)
            HistoryTallyMark.objects.filter(pk=1).update(upto=upto)
        return sum(row["n"] for row in above)

    HistoryTally.objects.all().delete()
    HistoryTallyMark.objects.all().delete()
    started = time.perf_counter()
    added = advance_history_tally()
    first_advance = time.perf_counter() - started
    assert added == TaskHistory.objects.count()

    measures: dict[str, Callable[[], object]] = {
        BASELINE: lambda: count_history_by_kind(above=0),
        "history counters by kind: the tally, no row above its mark": count_history_by_kind,
        "/metrics scrape (everything it reads), no row above the mark": scrape,
    }
    rows = {name: _timed(measure, args.runs) for name, measure in measures.items()}
    above = rewind(args.above)
    rows[f"history counters by kind: the tally, {above:,} rows above its mark"] = _timed(
        count_history_by_kind, args.runs
    )
    rows[f"/metrics scrape, {above:,} history rows above the mark"] = _timed(scrape, args.runs)
    started = time.perf_counter()
    assert advance_history_tally() == above
    catch_up = time.perf_counter() - started

    print(
        f"\nfigures benchmark — engine {args.engine}, {added:,} history rows of {args.tasks:,} tasks, "
        f"revision {git_revision()}"
    )
    print(f"first advance of the tally, from nothing: {first_advance:.2f} s; catching up {above:,} rows: "
          f"{catch_up * 1000:.0f} ms")  # fmt: skip
    for measure, seconds in (("first advance of the tally", first_advance), ("tally catch-up", catch_up)):
        record("figures", measure, engine=args.engine, size=args.tasks, value=seconds * 1000, unit="ms")
    report_timings("figures", rows, engine=args.engine, size=args.tasks, baseline=BASELINE,
                   judge=lambda name, figures: ("", None))  # fmt: skip


def _timed(measure: Callable[[], object], runs: int) -> list[float]:
    """``measure``'s times in ms, ``runs`` of them after one untimed warm-up."""
    measure()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        measure()
        times.append((time.perf_counter() - started) * 1000)
    return times


if __name__ == "__main__":
    main()
