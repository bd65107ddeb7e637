"""Console responsiveness: 20 active runs, 50,000 audit events, an engine-like writer.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/console.py [--runs 20] [--events 50000] [--seconds 10]

Builds a run database on disk: ``--runs`` Kriks runs of 4 plates (registered with
labctl.engine.register_run, started on staggered days so each is somewhere in its 25
days, their past work marked done through Store.transition) and filler device events up to
``--events`` audit events. Then it opens the console (QApplication + MainWindow until the
first snapshot is drawn: the "open" time) and, for ``--seconds``, lets a writer thread with
its own Store connection move jobs through ready/running/done and record device events, as
the engine would, while the "operator" switches to another tab every second (and now and
then to another run), scrolls the audit trail and changes the timeline span. A 10 ms QTimer on the GUI thread measures how late each of
its ticks comes: the largest delay is the event loop's worst stall.

The measurement is made ``--repeats`` times (default 5) on the same database, each with a
new window. Prints the figures of each; the last line is ``console: max stall N ms (median
of 5), open N.N s``, the medians. Targets: max stall <= 100 ms, open < 3 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PyQt6.QtCore import QModelIndex, QTimer  # noqa: E402
from PyQt6.QtWidgets import QApplication  # noqa: E402

from labctl.clock import RealClock, VirtualClock  # noqa: E402
from labctl.engine import register_run  # noqa: E402
from labctl.jobs import WorkcellRoles  # noqa: E402
from labctl.plan.resolve import resolve  # noqa: E402
from labctl.store import Store  # noqa: E402
from labctl.validate import load_protocol  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TZ = "Europe/Stockholm"
NOW = datetime(2026, 12, 13, 8, 0, tzinfo=timezone.utc)
TICK_MS = 10


def build(db: Path, runs: int, events: int) -> tuple[int, int]:
    """The database: ``runs`` running Kriks runs and about ``events`` audit events."""
    clock = VirtualClock(NOW)
    store = Store.open(db, clock)
    proto = load_protocol(ROOT / "protocols" / "kriks2011_da.yaml")
    labels = ["P1", "P2", "P3", "P4"]
    for i in range(runs):
        start = (NOW - timedelta(days=i % 24)).astimezone(ZoneInfo(TZ)).replace(tzinfo=None)
        start = start.replace(hour=9, minute=0, second=0, microsecond=0)
        plan = resolve(proto, {}, plates=4, start=start, timezone=TZ)
        rid = register_run(
            store, clock, proto, plan, WorkcellRoles.simulated(labels),
            name=f"Kriks DA batch {i + 1:02d}", workcell_name="simulated", workcell_text="",
            actor="bench",
        )  # fmt: skip
        with store.atomic():
            store.transition(
                "run", rid, "running", expected_from="planned", actor="engine", reason="start"
            )
            # Past work done, as the engine would have left it.
            by_task: dict[int, list] = {}
            for j in store.jobs(rid):
                by_task.setdefault(j.task_id, []).append(j)
            for t in store.tasks(rid):
                if t.due >= NOW - timedelta(hours=2):
                    continue
                store.transition(
                    "task",
                    t.id,
                    "active",
                    expected_from="pending",
                    actor="engine",
                    reason="due",
                    updates={"actual_start": t.due},
                )
                for j in by_task.get(t.id, []):
                    when = j.scheduled_start or t.due
                    store.transition(
                        "job",
                        j.id,
                        "ready",
                        expected_from="pending",
                        actor="engine",
                        reason="ready",
                    )
                    store.transition(
                        "job",
                        j.id,
                        "running",
                        expected_from="ready",
                        actor="engine",
                        reason="start",
                        updates={"started_at": when},
                    )
                    store.transition(
                        "job",
                        j.id,
                        "done",
                        expected_from="running",
                        actor="engine",
                        reason="done",
                        updates={"finished_at": when + timedelta(minutes=2)},
                    )
                store.transition(
                    "task",
                    t.id,
                    "done",
                    expected_from="active",
                    actor="engine",
                    reason="all jobs done",
                    updates={"actual_end": t.due + timedelta(minutes=15)},
                )
    head = store.head()
    have = head[0] if head else 0
    run_ids = [r.id for r in store.list_runs()]
    with store.atomic():
        for k in range(max(0, events - have)):
            store.record(
                "device-call", entity="device", actor="engine", run_id=run_ids[k % len(run_ids)],
                reason="poll", data={"device": "ot2-sim", "op": "poll", "n": k},
            )  # fmt: skip
    n_events = store.head()[0]  # type: ignore[index]
    store.close()
    return len(run_ids), n_events


class Writer(threading.Thread):
    """An engine-like writer: moves pending jobs on and records device calls, own Store."""

    def __init__(self, db: Path) -> None:
        super().__init__(name="bench-writer", daemon=True)
        self.db = db
        self.stop = threading.Event()
        self.writes = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        clock = RealClock()
        try:
            store = Store.open(self.db, VirtualClock(NOW))
            pending = [j for r in store.list_runs() for j in store.jobs(r.id, state="pending")]
            pending.sort(key=lambda j: j.scheduled_start or NOW)
            i = 0
            while not self.stop.is_set() and i < len(pending):
                j = pending[i]
                i += 1
                for src, dst in (("pending", "ready"), ("ready", "running"), ("running", "done")):
                    store.transition(
                        "job", j.id, dst, expected_from=src, actor="engine", reason=f"bench {dst}"
                    )
                    store.record(
                        "device-call",
                        entity="job",
                        entity_id=j.id,
                        actor="engine",
                        reason="poll",
                        data={"op": j.op},
                    )
                    self.writes += 2
                    clock.sleep(0.01)
            store.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc


def measure(db: Path, seconds: float) -> tuple[float, float]:
    """Open the console on ``db`` and work it for ``seconds`` under the writer: returns
    (the event loop's worst stall in ms, the open time in s)."""
    clock = RealClock()
    t_open = clock.monotonic()
    app = QApplication.instance() or QApplication(["labctl-bench"])
    from labctl.gui.app import configure, settle_heap
    from labctl.gui.main_window import MainWindow

    configure(app)  # what labctl.gui.app.main does
    win = MainWindow(db, VirtualClock(NOW), actor="bench")
    win.resize(1600, 1000)
    win.show()
    while win.snapshot is None:
        app.processEvents()
        clock.sleep(0.001)
    app.processEvents()
    win.repaint()
    open_s = clock.monotonic() - t_open
    settle_heap()  # as labctl.gui.app.main does after the first snapshot
    print(
        f"open: first snapshot drawn {open_s:.2f} s after start (QApplication, window, worker, store)"
    )

    # --- responsiveness under writes ----------------------------------------------------
    gaps: list[float] = []
    last = [clock.monotonic()]
    worst: list[tuple[float, float]] = []  # (delay ms, when s after the start)

    def tick() -> None:
        t = clock.monotonic()
        gaps.append((t - last[0]) * 1000 - TICK_MS)
        worst.append((gaps[-1], t - t_open))
        last[0] = t

    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(tick)
    snapshots = [0]
    win.snapshot_changed.connect(lambda _s: snapshots.__setitem__(0, snapshots[0] + 1))
    writer = Writer(db)
    steps = [0]
    tabs = win.tabs.count()

    def operator() -> None:
        """Every second: another tab, the audit scrolled on, the timeline span changed."""
        steps[0] += 1
        k = steps[0]
        win.show_tab(k % tabs)
        if k % tabs == 5:
            win.audit_view.newest.setChecked(k % 12 != 5)
        m = win.audit_view.model
        if m.canFetchMore(QModelIndex()):
            m.fetchMore(QModelIndex())
        win.audit_view.table.scrollToBottom()
        win.timeline_view.span.setCurrentIndex(k % 5)
        if k % 4 == 0:
            win.refresh()
        if k % 7 == 0:
            win.set_run(win.snapshot.runs[k % len(win.snapshot.runs)].id if win.snapshot else None)

    ops = QTimer()
    ops.setInterval(1000)
    ops.timeout.connect(operator)
    writer.start()
    last[0] = clock.monotonic()
    timer.start()
    ops.start()
    end = clock.monotonic() + seconds
    while clock.monotonic() < end:
        app.processEvents()
        clock.sleep(0.001)
    timer.stop()
    ops.stop()
    writer.stop.set()
    writer.join(30)
    rows = len(win.audit_view.model.rows)
    win.close()
    if writer.error is not None:
        raise RuntimeError(f"writer failed: {writer.error}")
    gaps.sort()
    max_stall = max(0.0, gaps[-1]) if gaps else 0.0
    p99 = gaps[int(len(gaps) * 0.99)] if gaps else 0.0
    print(f"writer: {writer.writes} writes in {seconds:g} s ({writer.writes / seconds:.0f}/s)")
    print(
        f"console: {snapshots[0]} new snapshots drawn, {steps[0]} operator actions, {rows:,} audit rows loaded"
    )
    print(
        f"event loop: {len(gaps)} ticks of {TICK_MS} ms; delay median {statistics.median(gaps):.1f} ms, "
        f"p99 {p99:.1f} ms, max {max_stall:.1f} ms"
    )
    worst.sort(reverse=True)
    print("worst delays: " + ", ".join(f"{d:.0f} ms at {w:.2f} s" for d, w in worst[:5]))
    return max_stall, open_s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=5, help="measurements (default 5)")
    args = ap.parse_args(argv)
    clock = RealClock()
    stalls: list[float] = []
    opens: list[float] = []
    with tempfile.TemporaryDirectory(prefix="labctl-bench-console-") as tmp:
        db = Path(tmp) / "labctl.db"
        t0 = clock.monotonic()
        n_runs, n_events = build(db, args.runs, args.events)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(
            f"machine: {os.cpu_count()} CPUs, load average {load:.2f} (shared with other processes)"
        )
        print(
            f"database: {n_runs} running runs, {n_events:,} audit events, {db.stat().st_size / 1e6:.1f} MB, built in {clock.monotonic() - t0:.1f} s"
        )
        for i in range(args.repeats):
            print(f"--- measurement {i + 1} of {args.repeats}")
            stall, open_s = measure(db, args.seconds)
            stalls.append(stall)
            opens.append(open_s)
    max_stall, open_s = statistics.median(stalls), statistics.median(opens)
    ok = max_stall <= 100 and open_s < 3
    print("worst stalls: " + ", ".join(f"{s:.0f} ms" for s in stalls))
    print("targets (medians): max stall <= 100 ms, open < 3 s: " + ("met" if ok else "NOT met"))
    print(f"console: max stall {max_stall:.0f} ms (median of {len(stalls)}), open {open_s:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
