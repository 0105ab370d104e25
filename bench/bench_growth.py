"""How each cost grows (issue 9 item 6).

  slots 100 -> 10,000:        domain.assignment.choose_slot on a room of that many slots, half
                              full (median over many calls).
  templates 100 -> 10,000:    vision.faces.FaceMatcher.match of one encoding (median).
  live sessions 1 -> 8:       entry latency, measured by bench_entry (over the real broker).
  log 10,000 -> 1,000,000:    the filtered query, measured by bench_eventlog.
  snapshots 1,000 -> 100,000: the housekeeper's disk check of the snapshot store (prune by
                              age, by budget, usage) once the store has its index, beside the
                              walk of the directory every check did before (the baseline).
Each curve's baseline is its own smallest point (ratio = growth factor); `chart()` draws
all four on a log-log PNG.
"""

from __future__ import annotations

import itertools
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from station.domain.assignment import choose_slot
from station.domain.layout import Layout, ShelfSpec, SlotAddress

SLOT_POINTS = (100, 1_000, 10_000)
TEMPLATE_POINTS = (100, 1_000, 10_000)


def _median_ms(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def slots_curve(quick: bool = False) -> dict[int, float]:
    out = {}
    rng = random.Random(3)
    for n in SLOT_POINTS:
        cols = min(40, n // 5)  # 5 rows per shelf; addresses allow 99 shelves x 99 columns
        shelves = n // (5 * cols)
        layout = Layout(ShelfSpec(i + 1, 5, cols, ("S", "S", "M", "M", "L"), 2, f"shelf-{i + 1}", False)
                        for i in range(shelves))
        occupancy: dict[SlotAddress, int] = {}
        for slot in layout:
            if rng.random() < 0.5:
                occupancy[slot.address] = rng.randrange(1, 3)
        reserved = {s.address: 1 for s in list(layout)[:: 37]}
        mine = {next(iter(layout)).address: 1}
        out[n] = _median_ms(lambda lo=layout, oc=occupancy, mi=mine, re=reserved:
                            choose_slot(lo, oc, "M", mi, reserved=re),
                            20 if quick else 100)
    return out


def templates_curve(quick: bool = False) -> dict[int, float]:
    from station.vision.faces import FaceMatcher

    rng = np.random.default_rng(4)
    out = {}
    for n in TEMPLATE_POINTS:
        templates = rng.normal(0, 0.12, size=(n, 128)).astype(np.float32)
        labels = [f"c{i // 2}" for i in range(n)]  # two templates per courier
        matcher = FaceMatcher(templates, labels)
        query = templates[n // 3] + rng.normal(0, 0.02, 128).astype(np.float32)
        matcher.match(query)
        out[n] = _median_ms(lambda m=matcher, q=query: m.match(q), 30 if quick else 200)
    return out


SNAPSHOT_POINTS = (1_000, 10_000, 100_000)


def snapshots_curve(quick: bool = False) -> dict[int, tuple[float, float]]:
    """{files: (disk check ms with the index, ms of one walk of the same directory)}."""
    import tempfile

    from station.vision.snapshots import REWALK_S, SnapshotStore

    out = {}
    for n in ((500, 5_000) if quick else SNAPSHOT_POINTS):
        with tempfile.TemporaryDirectory(prefix="bench-snaps-") as tmp:
            root = Path(tmp)
            for i in range(n):  # written directly: the store's fsyncs are not what is measured
                ref = f"{i:064x}"[::-1]
                sub = root / ref[:2]
                sub.mkdir(exist_ok=True)
                (sub / f"{ref}.snap").write_bytes(b"x" * 100)
            store = SnapshotStore(root)

            def check(st: SnapshotStore = store) -> None:
                st.prune(30)
                st.prune_to(10**12)
                st.usage()

            days = itertools.count(0.0, REWALK_S)  # a clock a day on at every look: each walks
            walker = SnapshotStore(root, monotonic=days.__next__)

            def walk(st: SnapshotStore = walker) -> None:
                st.usage()

            check()
            out[n] = (_median_ms(check, 20 if quick else 100), _median_ms(walk, 3 if quick else 5))
    return out


def rows_for(curve: dict[int, float], name: str, unit_of_n: str) -> list[dict[str, Any]]:
    lo, hi = min(curve), max(curve)
    return [{"figure": f"growth: {name}, {hi:,} {unit_of_n} (baseline: {lo:,} {unit_of_n})",
             "ours": curve[hi], "baseline": curve[lo], "unit": "ms", "target": None}]


def run(quick: bool = False, sessions: dict[int, Any] | None = None,
        log: dict[int, Any] | None = None) -> dict[str, Any]:
    slots = slots_curve(quick)
    templates = templates_curve(quick)
    curves: dict[str, dict[int, float]] = {
        "choose_slot (ms) vs slots": slots,
        "FaceMatcher.match (ms) vs templates": templates,
    }
    snaps = snapshots_curve(quick)
    curves["snapshot disk check (ms) vs files"] = {n: v[0] for n, v in snaps.items()}
    rows = rows_for(slots, "choose_slot", "slots") + rows_for(templates, "FaceMatcher.match, one encoding", "templates")
    top = max(snaps)
    rows.append({"figure": f"growth: snapshot disk check with {top:,} files, the store's index "
                           "(baseline: the walk of every file each check did before)",
                 "ours": snaps[top][0], "baseline": snaps[top][1], "unit": "ms", "target": None})
    if sessions:
        curves["entry p50 (ms) vs live sessions"] = {int(k): v["p50_ms"] for k, v in sessions.items()}
        rows += rows_for(curves["entry p50 (ms) vs live sessions"], "entry p50 over the broker", "live sessions")
    if log:
        curves["filtered log query (ms) vs events"] = {int(k): v["query_ms"] for k, v in log.items()}
        rows += rows_for(curves["filtered log query (ms) vs events"], "filtered log query", "events")
    return {"rows": rows, "curves": {k: {str(n): v for n, v in c.items()} for k, c in curves.items()}}


def chart(curves: dict[str, dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (name, curve) in zip(axes.flat, curves.items()):
        xs = sorted(int(k) for k in curve)
        ys = [curve[str(x)] for x in xs]
        ax.plot(xs, ys, marker="o")
        if xs[0] > 0 and xs[-1] / xs[0] >= 10:
            ax.set_xscale("log")
        if min(ys) > 0 and max(ys) / min(ys) >= 10:
            ax.set_yscale("log")
        else:  # a flat curve: a linear axis from zero shows it flat, not noise blown up
            ax.set_ylim(0, max(ys) * 1.3)
        ax.set_title(name, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        for x, y in zip(xs, ys):
            ax.annotate(f"{y:.3g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    out = run(quick="--quick" in sys.argv)
    for r in out["rows"]:
        print(f"  {r['figure']:<80} {r['ours']:.4f} ms  baseline {r['baseline']:.4f}  x{r['ours'] / r['baseline']:.1f}")


if __name__ == "__main__":
    main()
