"""Small protocol texts for tests."""

from __future__ import annotations

import textwrap

BASE = """\
labctl: 1
id: t
title: test protocol
version: 1.0.0
compounds:
  A: {stock: 10 mM, solvent: DMSO}
  B: {stock: 100 ug/mL, solvent: PBS}
  Y: {stock: 10 mM, solvent: water}
media:
  M1: {description: base one}
  M2: {description: base two}
  PBS: {description: wash}
culture: {labware: corning_6_wellplate_16.8ml_flat, volume: 2 mL}
timing: {feed_at: "09:00", window: 1 h}
"""


def protocol_text(schedule: str, extra: str = "") -> str:
    """BASE plus ``extra`` top-level keys plus a ``schedule:`` block (indented for you)."""
    return (
        BASE
        + textwrap.dedent(extra)
        + "schedule:\n"
        + textwrap.indent(textwrap.dedent(schedule), "  ")
    )


def load(schedule: str, extra: str = ""):  # noqa: ANN201
    from labctl.validate import load_text

    return load_text(protocol_text(schedule, extra), "t.yaml")
