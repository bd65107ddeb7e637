"""Places two simulated devices share: an incubator's transfer station that an arm reaches.

On a real workcell the PF400 picks the plate the Cytomat put on its transfer station, and
the Cytomat's sensor then reads the station empty: one physical place, two devices that
see it. In simulation each device keeps its own state, so a station taught on the arm can
be *linked* to a place another simulator owns (:class:`Spot`); the arm's station map
(:class:`Stations`) reads and changes that place through the owner, and never keeps a copy
(so a restarted arm cannot disagree with the incubator about it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Protocol

from labctl.errors import DeviceError

__all__ = ["Spot", "Stations", "TransferSpot"]


class Spot(Protocol):
    """One physical place another simulator owns."""

    def plate(self) -> str | None:
        """The plate there now, or None when it is empty."""
        ...

    def put(self, plate: str) -> None:
        """``plate`` is put there; ValueError when the place is not free."""
        ...

    def take(self) -> str | None:
        """The plate there is taken away; returns it (None: there was none)."""
        ...


class _TransferSide(Protocol):
    """What the Cytomat and LiCONiC simulators show of their transfer station."""

    @property
    def transfer_station(self) -> str | None: ...

    def place_on_transfer_station(self, plate: str) -> None: ...

    def take_from_transfer_station(self) -> str: ...


class TransferSpot:
    """An incubator simulator's transfer station as a :class:`Spot` (what its sensor reads)."""

    def __init__(self, incubator: _TransferSide) -> None:
        self.incubator = incubator

    def plate(self) -> str | None:
        return self.incubator.transfer_station

    def put(self, plate: str) -> None:
        try:
            self.incubator.place_on_transfer_station(plate)
        except DeviceError as exc:  # a plate on its way out of the incubator, or one there
            raise ValueError(exc.detail) from None

    def take(self) -> str | None:
        try:
            return self.incubator.take_from_transfer_station()
        except DeviceError:
            return None


class Stations(MutableMapping[int, str]):
    """Station number -> plate id: the arm's own stations, and the linked ones read through
    their :class:`Spot`. :meth:`own` is what the arm saves (a linked place is its owner's)."""

    def __init__(self, linked: Mapping[int, Spot] | None = None) -> None:
        self._own: dict[int, str] = {}
        self.linked: dict[int, Spot] = dict(linked or {})

    def own(self) -> dict[int, str]:
        """The plates on the arm's own (not linked) stations."""
        return dict(self._own)

    def restore(self, saved: Mapping[int, str]) -> None:
        """Put back what :meth:`own` returned (linked stations in it are ignored)."""
        for k, v in saved.items():
            if k not in self.linked:
                self._own[k] = v

    def __getitem__(self, station: int) -> str:
        spot = self.linked.get(station)
        plate = spot.plate() if spot is not None else self._own.get(station)
        if plate is None:
            raise KeyError(station)
        return plate

    def __setitem__(self, station: int, plate: str) -> None:
        spot = self.linked.get(station)
        if spot is None:
            self._own[station] = plate
        else:
            spot.put(plate)

    def __delitem__(self, station: int) -> None:
        spot = self.linked.get(station)
        if spot is None:
            del self._own[station]
        elif spot.take() is None:
            raise KeyError(station)

    def __iter__(self) -> Iterator[int]:
        linked = [k for k, s in self.linked.items() if s.plate() is not None]
        return iter(sorted([*self._own, *linked]))

    def __len__(self) -> int:
        return sum(1 for _ in self)
