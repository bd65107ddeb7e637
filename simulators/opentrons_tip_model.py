"""The tip model: what opentrons' analyses of a protocol showed its run-time parameters do to
its tips, so that the analysis for new values can be derived instead of run (see
:class:`TipModel`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from labctl.simulators.opentrons_analysis_data import ProtocolAnalysis, same_value
from labctl.simulators.opentrons_wire import replace_ids


def _valid_values(specs: Mapping[str, Mapping[str, Any]], values: Mapping[str, Any]) -> bool:
    """Names, types, ranges and choices of ``values`` as opentrons checks them."""
    for name, value in values.items():
        spec = specs.get(name)
        if spec is None:
            return False
        kind = spec.get("type")
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not {
            "int": number and isinstance(value, int),
            "float": number,
            "bool": isinstance(value, bool),
            "str": isinstance(value, str),
        }.get(str(kind), False):
            return False
        choices = spec.get("choices")
        if isinstance(choices, list):
            if not any(isinstance(c, dict) and same_value(c.get("value"), value) for c in choices):
                return False
        elif number:
            low, high = spec.get("min"), spec.get("max")
            if low is None or high is None or not low <= value <= high:
                return False
    return True


@dataclasses.dataclass(frozen=True)
class _Rack:
    """A tip rack of the reference analysis: wells in pick order (column by column) and the
    position of each well's top relative to the rack (mm)."""

    order: tuple[str, ...]
    tops: Mapping[str, tuple[float, float, float]]

    @classmethod
    def of(cls, definition: Mapping[str, Any]) -> _Rack | None:
        try:
            order = tuple(w for column in definition["ordering"] for w in column)
            wells = definition["wells"]
            tops = {
                w: (
                    float(wells[w]["x"]),
                    float(wells[w]["y"]),
                    float(wells[w]["z"]) + float(wells[w]["depth"]),
                )
                for w in order
            }
        except (KeyError, TypeError, ValueError):
            return None
        return cls(order, tops)


_PICK = "pickUpTip"
_TIMES_AND_ID = frozenset({"id", "createdAt", "startedAt", "completedAt"})


class TipModel:
    """What opentrons' analyses of one protocol showed its run-time parameters do to its tips.

    Robots do not remember tips between runs, so a protocol takes the first unused tip of each
    pipette's racks as a run-time parameter and otherwise does the same thing every run. Running
    opentrons for every new value would make each run cost a full analysis; instead this model
    learns from real analyses of the same files and derives the analysis for new values when
    it can, and only then:

    - the first clean analysis is the reference. Each pipette's ``pickUpTip`` commands there
      take consecutive tips (column by column, rack after rack); a pipette whose picks do not
      is never derived;
    - a parameter is mapped to a pipette once an analysis with other values shows that
      changing it by ``k`` moved that pipette's picks, and only them, ``k`` tips on, every
      other command (parameters and results) staying identical;
    - every pick of a derived analysis lands in a rack position an analysis has shown (each
      observed pick pins where its rack sits in the pipette's tip order, and its position).

    Anything else (an unmapped parameter changed, a tip beyond the racks seen, invalid values)
    is left to opentrons, and an analysis contradicting the model stops all derivation for these
    files. Callers hold the analysis service's lock (the model is not thread-safe).
    """

    def __init__(self, reference: ProtocolAnalysis) -> None:
        self.reference = reference
        self.specs = {str(p.get("variableName")): p for p in reference.run_time_parameters}
        self.ref_values: dict[str, Any] = {
            name: spec.get("value") for name, spec in self.specs.items()
        }
        self.broken = False
        self.pipette_of: dict[str, str] = {}  # parameter -> pipette id it moves
        self.probed: set[str] = set()
        self.explored: set[tuple[str, int]] = set()  # (pipette, tip index) probed ahead
        # Parameters uploads have set (off their defaults): only these are probed ahead.
        self.asked: set[str] = {
            n for n, p in self.specs.items() if not same_value(p.get("value"), p.get("default"))
        }
        self.racks: dict[str, _Rack] = {}
        for cmd in reference.commands:
            result = cmd.get("result") or {}
            definition = result.get("definition") or {}
            if cmd.get("commandType") == "loadLabware" and (definition.get("parameters") or {}).get(
                "isTiprack"
            ):
                rack = _Rack.of(definition)
                if rack is not None:
                    self.racks[str(result.get("labwareId"))] = rack
        self.picks: dict[str, list[int]] = {}  # pipette -> indexes of its pickUpTip commands
        for index, cmd in enumerate(reference.commands):
            if cmd.get("commandType") == _PICK:
                pipette = str((cmd.get("params") or {}).get("pipetteId"))
                self.picks.setdefault(pipette, []).append(index)
        self.first: dict[str, int] = {}  # pipette -> tip order index of its first reference pick
        self.bases: dict[str, dict[str, int]] = {}  # pipette -> rack -> order index of its A1
        self.origins: dict[tuple[str, str], tuple[float, float, float]] = {}
        for pipette, indexes in self.picks.items():
            first = self._pick(reference.commands[indexes[0]])
            rack = self.racks.get(first[0]) if first is not None else None
            if first is None or rack is None or first[1] not in rack.order:
                continue
            self.first[pipette] = rack.order.index(first[1])
            self.bases[pipette] = {first[0]: 0}
            if not self._pin(pipette, reference.commands, 0):
                del self.first[pipette], self.bases[pipette]  # not consecutive: never derived

    # ---- values ------------------------------------------------------------------------

    def normalise(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` without those equal to their parameter's default (same analysis)."""
        return {
            k: v
            for k, v in values.items()
            if k not in self.specs or not same_value(v, self.specs[k].get("default"))
        }

    def _full(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {n: values.get(n, s.get("default")) for n, s in self.specs.items()}

    def _deltas(self, full: Mapping[str, Any]) -> dict[str, Any]:
        """Parameters whose value differs from the reference's: name -> int difference, or
        None when it is not an int parameter."""
        out: dict[str, Any] = {}
        for name, value in full.items():
            ref = self.ref_values.get(name)
            if same_value(value, ref):
                continue
            if self.specs[name].get("type") == "int" and isinstance(ref, int | float):
                out[name] = int(value) - int(ref)
            else:
                out[name] = None
        return out

    def probe_values(self, name: str) -> dict[str, Any] | None:
        """The reference's values with ``name`` moved by one (once per parameter), or None."""
        spec = self.specs.get(name)
        if self.broken or name in self.pipette_of or name in self.probed or spec is None:
            return None
        self.probed.add(name)
        return self._moved(name, 1) or self._moved(name, -1)  # down only at the maximum

    def next_probes(self, *, mapping: bool = True) -> list[dict[str, Any]]:
        """Values worth analysing ahead of need: each parameter not mapped yet moved by one
        (unless ``mapping`` is False: another analysis under way may map them), and for each
        mapped one the first pick moved just past (or before) the tips the model has placed,
        to show the next rack. Each is offered once."""
        if self.broken:
            return []
        out = []
        for name in self.specs if mapping else ():
            # Only parameters uploads have set: moving another one (which may do more than
            # move tips) would end derivation for files that never change it.
            if name in self.asked and name not in self.pipette_of:
                probe = self.probe_values(name)
                if probe is not None:
                    out.append(probe)
        for name, pipette in self.pipette_of.items():
            bases = self.bases.get(pipette) or {}
            if pipette not in self.first or not bases:
                continue
            spans = [(b, b + len(self.racks[r].order)) for r, b in bases.items()]
            low, high = min(b for b, _ in spans), max(e for _, e in spans)
            # Indexes count from the reference's first rack: a rack before it is negative.
            for index in (high, low - 1):
                if (pipette, index) in self.explored:
                    continue
                self.explored.add((pipette, index))
                probe = self._moved(name, index - self.first[pipette])
                if probe is not None:
                    out.append(probe)
        return out

    def _moved(self, name: str, k: int) -> dict[str, Any] | None:
        """The reference's values with ``name`` moved by ``k``, if inside its limits."""
        spec, ref = self.specs[name], self.ref_values.get(name)
        if spec.get("type") != "int" or not isinstance(ref, int | float):
            return None
        value = int(ref) + k
        low, high = spec.get("min"), spec.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            return None
        full = {
            n: int(v) if self.specs[n].get("type") == "int" else v
            for n, v in self.ref_values.items()
        }
        full[name] = value
        return self.normalise(full)

    # ---- deriving ----------------------------------------------------------------------

    def derive(self, values: Mapping[str, Any]) -> tuple[ProtocolAnalysis | None, tuple[str, ...]]:
        """The analysis for ``values`` from the reference, or None and the changed parameters
        whose effect is not known yet."""
        if self.broken or not _valid_values(self.specs, values):
            return None, ()
        full = self._full(values)
        deltas = self._deltas(full)
        unmapped = tuple(n for n in deltas if n not in self.pipette_of)
        if unmapped:
            return None, unmapped
        commands = list(self.reference.commands)
        for name, k in deltas.items():
            pipette = self.pipette_of[name]
            for n, index in enumerate(self.picks[pipette]):
                cmd = commands[index]
                spot = self._locate(pipette, self.first[pipette] + n + k)
                where = json.dumps((cmd.get("params") or {}).get("wellLocation"), sort_keys=True)
                origin = self.origins.get((spot[0], where)) if spot is not None else None
                if spot is None or origin is None:
                    return None, ()
                rack_id, well = spot
                top = self.racks[rack_id].tops[well]
                params = dict(cmd.get("params") or {}, labwareId=rack_id, wellName=well)
                position = {a: round(o + t, 6) for a, o, t in zip("xyz", origin, top, strict=True)}
                result = dict(cmd.get("result") or {}, position=position)
                commands[index] = dict(cmd, params=params, result=result)
        parameters = tuple(
            dict(spec, value=_like(spec.get("value"), full[name]))
            for name, spec in self.specs.items()
        )
        return (
            dataclasses.replace(
                self.reference, commands=tuple(commands), run_time_parameters=parameters
            ),
            (),
        )

    def _locate(self, pipette: str, index: int) -> tuple[str, str] | None:
        for rack_id, base in self.bases.get(pipette, {}).items():
            order = self.racks[rack_id].order
            if base <= index < base + len(order):
                return rack_id, order[index - base]
        return None

    # ---- learning ----------------------------------------------------------------------

    @staticmethod
    def _pick(cmd: Mapping[str, Any]) -> tuple[str, str, str, tuple[float, float, float]] | None:
        """(rack id, well, wellLocation as JSON, position) of a pickUpTip command."""
        params = cmd.get("params") or {}
        position = (cmd.get("result") or {}).get("position") or {}
        try:
            xyz = (float(position["x"]), float(position["y"]), float(position["z"]))
        except (KeyError, TypeError, ValueError):
            return None
        where = json.dumps(params.get("wellLocation"), sort_keys=True)
        return str(params.get("labwareId")), str(params.get("wellName")), where, xyz

    def _pin(self, pipette: str, commands: Sequence[Mapping[str, Any]], k: int) -> bool:
        """Check the pipette's picks in ``commands`` (reference ids) against a shift of ``k``
        tips and record the racks and positions they show; False (nothing recorded) if they
        contradict the model."""
        bases = dict(self.bases[pipette])
        origins: dict[tuple[str, str], tuple[float, float, float]] = {}
        for n, index in enumerate(self.picks[pipette]):
            pick = self._pick(commands[index])
            if pick is None or pick[0] not in self.racks:
                return False
            rack_id, well, where, xyz = pick
            rack = self.racks[rack_id]
            if well not in rack.order:
                return False
            base = self.first[pipette] + n + k - rack.order.index(well)
            if bases.setdefault(rack_id, base) != base:
                return False
            for other, other_base in bases.items():
                size = len(self.racks[other].order)
                if (
                    other != rack_id
                    and base < other_base + size
                    and other_base < base + len(rack.order)
                ):
                    return False  # two racks cannot hold the same tip positions
            top = rack.tops[well]
            x, y, z = (round(p - t, 6) for p, t in zip(xyz, top, strict=True))
            origin = (x, y, z)
            known = origins.get((rack_id, where)) or self.origins.get((rack_id, where))
            if known is not None and any(
                abs(a - b) > 1e-3 for a, b in zip(known, origin, strict=True)
            ):
                return False
            origins.setdefault((rack_id, where), origin)
        self.bases[pipette] = bases
        for key, origin in origins.items():
            self.origins.setdefault(key, origin)
        return True

    def learn(self, analysis: ProtocolAnalysis) -> None:
        """Check a clean analysis of the same files against the model and learn from it."""
        if self.broken:
            return
        commands = self._aligned(analysis)
        if commands is None:
            self.broken = True  # the parameters change more than tip positions
            return
        specs = {str(p.get("variableName")): p for p in analysis.run_time_parameters}
        if set(specs) != set(self.specs):
            self.broken = True
            return
        deltas = self._deltas({n: s.get("value") for n, s in specs.items()})
        driven = {p: n for n, p in self.pipette_of.items()}
        for pipette, indexes in self.picks.items():
            moved = any(
                self._pick(commands[i]) != self._pick(self.reference.commands[i]) for i in indexes
            )
            name = driven.get(pipette)
            if name is not None:
                k = deltas.get(name, 0)
                if k is None or not self._pin(pipette, commands, k):
                    self.broken = True
                    return
                continue
            if not moved:
                continue
            if pipette not in self.first:
                self.broken = True  # picks that do not follow the tip order moved
                return
            fitting = []
            for n, k in deltas.items():
                if not k or n in self.pipette_of:
                    continue
                saved = (dict(self.bases[pipette]), dict(self.origins))
                if self._pin(pipette, commands, k):
                    fitting.append(n)
                self.bases[pipette], self.origins = saved
            if not fitting:
                self.broken = True  # the picks moved, but by no parameter's change
                return
            if len(fitting) == 1:  # more: which one moved it is not known yet
                self.pipette_of[fitting[0]] = pipette
                self._pin(pipette, commands, deltas[fitting[0]])

    def _aligned(self, analysis: ProtocolAnalysis) -> list[Mapping[str, Any]] | None:
        """The analysis' commands with the reference's ids, if everything but the picks'
        rack, well and position is identical to the reference; else None."""
        ref = self.reference
        if len(analysis.commands) != len(ref.commands):
            return None
        ids: dict[str, str] = {}
        for mine, theirs in zip(ref.commands, analysis.commands, strict=True):
            if mine.get("commandType") != theirs.get("commandType"):
                return None
            a, b = mine.get("result") or {}, theirs.get("result") or {}
            for key in ("labwareId", "pipetteId", "moduleId"):
                if isinstance(a.get(key), str) and isinstance(b.get(key), str):
                    ids[b[key]] = a[key]
        out: list[Mapping[str, Any]] = []
        for mine, theirs in zip(ref.commands, analysis.commands, strict=True):
            cmd = replace_ids(theirs, ids)
            a = {k: v for k, v in mine.items() if k not in _TIMES_AND_ID}
            b = {k: v for k, v in cmd.items() if k not in _TIMES_AND_ID}
            if mine.get("commandType") == _PICK:
                for side in (a, b):
                    side["params"] = {
                        k: v
                        for k, v in (side.get("params") or {}).items()
                        if k not in ("labwareId", "wellName")
                    }
                    side["result"] = {
                        k: v for k, v in (side.get("result") or {}).items() if k != "position"
                    }
            if a != b:
                return None
            out.append(cmd)
        for field in ("labware", "pipettes", "modules", "liquids"):
            if [replace_ids(x, ids) for x in getattr(analysis, field)] != [
                dict(x) for x in getattr(ref, field)
            ]:
                return None
        return out


def _like(template: Any, value: Any) -> Any:
    """``value`` in the JSON type opentrons reports it in (numbers of int parameters are
    floats in ``runTimeParameters``)."""
    if isinstance(template, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
