"""The LiCONiC StoreX PLC's address space and handling-error codes, as the simulator uses them.

The STX's controller is a Keyence KV PLC spoken to in KV host link: ``CR`` -> ``CC`` opens
the link, ``CQ`` -> ``CF`` ends it, ``ST``/``RS``/``RD`` set, reset and read a relay,
``WR``/``RD DMn`` write and read data memory; errors ``E0``..``E5`` (LiCONiC "StoreX Series
Remote Operation V0712" 1.2.7; Keyence "Visual KV Series User's Manual" 7.5, KV mode).
Relays are numbered channel * 100 + bit with bits 00..15 (1915 is channel 19, bit 15); a PLC
answers ``ST``/``RS``/``RD`` for every relay that exists, whether or not LiCONiC's program
uses it, and ``E0`` ("undefined timer, counter, data memory") only for a number outside its
relay space. Which relays mean what (V0712 1.2.8, 1.3; PyLabRobot 0.2.2
``storage/liconic/liconic_backend.py``):

====  ===================================================================================
1915  ready (``1`` idle);  1814 handling-error flag;  1813 plate on the transfer station;
      1812 plate on the shovel;  1807 plate on the second transfer station
1801  initialise;  1904 import (transfer station -> DM0/DM5);  1905 export (DM0/DM5 ->
      transfer station);  1908 pick (DM0/DM5 -> shovel);  1909 place (shovel -> DM0/DM5)
1900  reset (clears handling errors);  1800 soft reset
1902  continue access;  1903 abort/terminate access ("used in conjunction with special
      configuration flags")
1910  lift to the barcode position (``RS`` back);  1911 shovel sensor on;  1912 swap
      station turned;  1913 shaker on (speed in DM39);  1914 plate-ready flag
1200  two-way communication;  1201/1213/1214/1215 unsolicited <SPX>/<CxD>/<SNX>/<SYX>
      messages (default 0);  1604 short-access numbering;  1504/1505 CO2/water alarms
====  ===================================================================================

PyLabRobot also sends ``ST 1901`` / ``ST 1902`` as "open door" / "close door": no source
documents 1901, and V0712 documents 1902 as "continue access", so the simulator stores
those bits like any other relay and moves nothing (see notes/devices-liconic.md).

Handling errors (V0712 1.4; the table PyLabRobot transcribes in
``storage/liconic/constants.py``/``errors.py``): ``000cc`` general causes 01, 07..17;
``001ss`` / ``002ss`` import / export steps 00..11 (*not* causes: 00111 is "lift could not
be initialised after Import Plate"); ``0ppcc`` for phases 3 plate remove (pick), 4 barcode
read, 5 place, 6 set, 7 get with the general causes. The codes the simulator raises, chosen
from that table by meaning (which code a real unit picks in each case is an ASSUMPTION):

=====  ==================================================================================
00013  export onto an occupied transfer station ("Export operation while plate is on
       transfer station")
00016  export from an empty slot, import with nothing on the transfer station ("no plate
       on the shovel")
00015  import or export while a plate rests on the shovel
00107  import into an occupied slot (the shovel cannot reach the stacker's front position;
       a newer firmware reported this case as 06163 = 0x1813, low byte 0x13 "shovel OUT
       time out")
00011  cassette (DM0) outside the unit;  00012 level (DM5) outside the cassette
00014  access before initialisation;  00007 access while the door is open (gate)
00315  pick with a plate already on the shovel;  00316 pick from an empty slot
00511  place into an occupied slot;  00516 place with nothing on the shovel
=====  ==================================================================================
"""

from __future__ import annotations

__all__ = [
    "CLIMATE_DM",
    "CONTINUE_ACCESS",
    "DM_CASSETTE",
    "DM_CASSETTES",
    "DM_ERROR",
    "DM_LEVEL",
    "DM_LEVELS",
    "DM_SHAKER_SPEED",
    "ERROR_FLAG",
    "EXPORT",
    "IMPORT",
    "INIT",
    "OPERATIONS",
    "PICK",
    "PLACE",
    "READY",
    "RESETS",
    "SECOND_TS_SENSOR",
    "SHAKER",
    "SHOVEL_SENSOR",
    "TERMINATE",
    "TS_SENSOR",
    "relay_exists",
]

READY, ERROR_FLAG, TS_SENSOR, SHOVEL_SENSOR, SECOND_TS_SENSOR = 1915, 1814, 1813, 1812, 1807
INIT, IMPORT, EXPORT, PICK, PLACE = 1801, 1904, 1905, 1908, 1909
CONTINUE_ACCESS, TERMINATE = 1902, 1903
RESETS = (1900, 1800)
SHAKER = 1913

# Operation relay -> the kind of action it starts (the action log's names).
OPERATIONS = {INIT: "init", IMPORT: "store", EXPORT: "retrieve", PICK: "pick", PLACE: "place"}

DM_CASSETTE, DM_LEVEL, DM_ERROR = 0, 5, 200
DM_LEVELS, DM_CASSETTES = 25, 29  # levels per cassette, number of cassettes (V0712 1.3.6)
DM_SHAKER_SPEED = 39

# Climate channel -> (setpoint DM, actual DM, integer units per channel unit).
CLIMATE_DM = {
    "temperature": (890, 982, 10),
    "humidity": (893, 983, 10),
    "co2": (894, 984, 100),
    "o2": (895, 985, 100),
}

# Relay channels the simulated PLC has: 00..29 (I/O, internal utility relays 1000-1915,
# special utility relays 2000-2915 on a KV of this family). ASSUMPTION beyond the bit rule.
_LAST_CHANNEL = 29


def relay_exists(addr: int) -> bool:
    """Whether ``addr`` names a relay of the PLC (bit 00..15 of channel 00..29)."""
    channel, bit = divmod(addr, 100)
    return bit <= 15 and channel <= _LAST_CHANNEL
