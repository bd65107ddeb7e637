"""Where the timeline's Gantt chart draws: the x of a time, the row of each group heading and
lane, each bar (or block of bars too narrow to read) and the boxes that answer the mouse.

Plain geometry from (lanes, start, end, width): :class:`GanttGeometry` computes it once for
those, and the painter (:mod:`labctl.gui.gantt_paint`) and the canvas's tooltips read it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import NamedTuple

from PyQt6.QtCore import QPointF, QRectF

from labctl.gui import theme
from labctl.gui.models.timeline import Bar, Lane

LEFT = 200  # the lane titles' column
AXIS = 50  # the time axis above the lanes
LANE_H = 34
GROUP_H = 26
RIGHT = 16

_URGENCY = [theme.VERMILLION, theme.BLUE, "#FFFFFF", theme.BLUISH_GREEN, theme.REDDISH_PURPLE]


def _worse(a: str, b: str) -> str:
    """Of two bar fills, the more urgent one (failed, running, planned, done, skipped)."""
    ra = _URGENCY.index(a) if a in _URGENCY else 2
    rb = _URGENCY.index(b) if b in _URGENCY else 2
    return a if ra <= rb else b


def bar_style(b: Bar) -> tuple[str, str, str]:
    """(fill, text colour, symbol) of a bar by its state."""
    if b.failed:
        t = theme.tone("fault")
    elif b.state == "running":
        t = theme.tone("running")
    elif b.state == "done":
        t = theme.tone("ok")
    elif b.state == "skipped":
        t = theme.tone("skipped")
    else:
        return ("#FFFFFF", theme.INK, "○")
    return (t.fill, t.text, t.symbol)


def x_of(t: datetime, start: datetime, end: datetime, width: int) -> float:
    """The x of ``t`` on a chart ``width`` wide showing ``start`` to ``end``."""
    span = (end - start).total_seconds() or 1.0
    w = width - LEFT - RIGHT
    return LEFT + (t - start).total_seconds() / span * w


def chart_height(lanes: Sequence[Lane]) -> int:
    groups = len({lane.group for lane in lanes})
    return AXIS + groups * GROUP_H + len(lanes) * LANE_H + 12


def step_hours(start: datetime, end: datetime) -> int:
    """Hours between two ticks of the axis: about 16 ticks at most."""
    hours = (end - start).total_seconds() / 3600
    for step in (1, 2, 3, 6, 12, 24):
        if hours / step <= 16:
            return step
    return 24


def collapse(
    bars: Sequence[Bar], x: Callable[[datetime], float]
) -> tuple[list[Bar], dict[int, list[Bar]]]:
    """A plate's tasks as one bar each when their steps are too narrow to tell apart.

    The bar spans the task's first start to last end and takes the most urgent state of
    its steps (failed, running, planned, done, skipped); its window and slack are the
    main job's, its ``job_id`` minus the task's id. Returns the bars and the steps of each
    collapsed bar by that ``job_id``.
    """
    by_task: dict[int, list[Bar]] = {}
    for b in bars:
        by_task.setdefault(b.task_id, []).append(b)
    out: list[Bar] = []
    collapsed: dict[int, list[Bar]] = {}
    for steps in by_task.values():
        narrow = min(x(b.end) - x(b.start) for b in steps) < 40
        if len(steps) == 1 or not narrow:
            out.extend(steps)
            continue
        main = next((b for b in steps if b.main), steps[0])
        collapsed[-main.task_id] = steps
        states = {b.state for b in steps}
        failed = any(b.failed for b in steps)
        if failed:
            state = next(b.state for b in steps if b.failed)
        elif "running" in states:
            state = "running"
        elif states <= {"done", "skipped"}:
            state = "done" if "done" in states else "skipped"
        else:
            state = "pending" if not states & {"done", "running"} else "running"
        out.append(
            replace(
                main,
                start=min(b.start for b in steps),
                end=max(b.end for b in steps),
                label=main.title,
                state=state,
                failed=failed,
                planned=all(b.planned for b in steps),
                job_id=-main.task_id,
            )
        )
    return sorted(out, key=lambda b: b.start), collapsed


class Placed(NamedTuple):
    """A bar drawn on its own, from ``x0`` to ``x1``."""

    x0: float
    x1: float
    bar: Bar


class Block(NamedTuple):
    """Touching bars under 4 px wide, drawn as one block in the most urgent fill."""

    x0: float
    x1: float
    fill: str
    failed: bool
    merged: int  # how many bars


class Row(NamedTuple):
    """A group heading (``lane`` None) or a lane, at ``y``; ``lane_index`` counts lanes
    (-1 for a heading)."""

    y: float
    lane_index: int
    group: str
    lane: Lane | None
    items: list[Placed | Block]


class GanttGeometry:
    """The rows, items and mouse boxes of ``lanes`` between ``start`` and ``end`` on a chart
    ``width`` wide. Plate lanes show collapsed tasks (:func:`collapse`)."""

    def __init__(self, lanes: list[Lane], start: datetime, end: datetime, width: int) -> None:
        self.key = (width, id(lanes), start, end)
        self.lanes = lanes
        self.start, self.end, self.width = start, end, width
        self.hits: list[tuple[QRectF, Bar]] = []  # later boxes are on top
        self.steps: dict[int, list[Bar]] = {}  # collapsed task bar (-task id) -> its steps
        self.rows = self._place()

    def x_of(self, t: datetime) -> float:
        return x_of(t, self.start, self.end, self.width)

    @property
    def bottom(self) -> float:
        """The y below the last lane."""
        return self.rows[-1].y + LANE_H if self.rows else AXIS

    def _place(self) -> list[Row]:
        rows: list[Row] = []
        y = float(AXIS)
        group = None
        left, right = LEFT + 1, self.width - RIGHT
        for i, lane in enumerate(self.lanes):
            if lane.group != group:
                group = lane.group
                rows.append(Row(y, -1, group, None, []))
                y += GROUP_H
            bars: Sequence[Bar] = lane.bars
            if lane.group == "Plates":
                bars, steps = collapse(lane.bars, self.x_of)
                self.steps.update(steps)
            items: list[Placed | Block] = []
            block: Block | None = None
            for b in bars:
                x0, x1 = self.x_of(b.start), self.x_of(b.end)
                wx1 = self.x_of(b.window_end) if b.window_end is not None else x1
                if max(x1, wx1) < left or x0 > right:
                    continue
                x0, x1 = max(left, x0), min(right, x1)
                fill = bar_style(b)[0]
                if x1 - x0 < 4 and not b.late and not (b.main and lane.group == "Plates"):
                    if block is not None and x0 <= block.x1 + 1:
                        block = Block(
                            block.x0,
                            max(block.x1, x1),
                            _worse(block.fill, fill),
                            block.failed or b.failed,
                            block.merged + 1,
                        )
                        continue
                    if block is not None:
                        items.append(block)
                    block = Block(x0, max(x1, x0 + 3), fill, b.failed, 1)
                    self.hits.append((QRectF(x0 - 2, y + 3, 7, LANE_H - 6), b))
                    continue
                items.append(Placed(x0, max(x1, x0 + 3), b))
                self.hits.append((QRectF(x0 - 2, y + 3, max(x1 - x0, 3) + 4, LANE_H - 6), b))
            if block is not None:
                items.append(block)
            items.sort(key=lambda it: it.x0)
            rows.append(Row(y, i, lane.group, lane, items))
            y += LANE_H
        return rows

    def bar_at(self, pos: QPointF) -> Bar | None:
        """The bar under ``pos`` (the one drawn last where several overlap)."""
        for r, b in reversed(self.hits):
            if r.contains(pos):
                return b
        return None
