"""``labctl device-action``: a supervisor's manual device action from a terminal, the CLI
twin of the console's "Manual device action…" (for the person who logs in at 3 a.m.).

Like every operator command it queues a command for the engine and waits for its verdict
(:mod:`labctl.engine.manual` applies it, only while no run's task needs the device, and
records it in the audit trail): exit 0 done, 1 refused or failed (the engine's reason),
3 queued while no engine runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from labctl.accounts import Action
from labctl.cli.common import UsageError, add_db_options, open_store
from labctl.cli.operator_cmds import add_wait_option, signed_queue
from labctl.engine.manual import DEVICE_ACTION, INCUBATOR_ACTIONS, MOVER_ACTIONS

__all__ = ["cmd_device_action", "register"]

ACTIONS = (*INCUBATOR_ACTIONS, *MOVER_ACTIONS)
SLOT_ACTIONS = ("present", "put-away")

EPILOG = """\
actions:
  present      an incubator brings the plate in --slot N to its transfer station
  put-away     an incubator stores the plate on its transfer station in --slot N
  open-gate    an incubator opens its automatic gate (lift door) at the transfer station
  close-gate   ... and closes it (a Cytomat; a LiCONiC documents no gate command)
  move         an arm carries a plate --from STATION --to STATION (the workcell's names)

The engine does it only while no run's task needs the device, and records it in the audit
trail; on a database with accounts only a supervisor may. A plate you present stays out,
and a gate you open stays open, until you put it away or close it.

examples:
  labctl device-action inc-1 present --slot 3 --reason "look at P3 under the microscope"
  labctl device-action inc-1 open-gate --reason "free a plate stuck on the shovel"
  labctl device-action arm-1 move --from inc-1/transfer --to nest --plate P3 --reason "..."
"""


def args_of(a: argparse.Namespace) -> dict[str, Any]:
    """The command's args from the options; UsageError where one is missing or extra."""
    out: dict[str, Any] = {"device": a.device, "action": a.action}
    if a.action in SLOT_ACTIONS:
        if a.slot is None:
            raise UsageError(f"{a.action} needs --slot N (the incubator's slot, from 1)")
        out["slot"] = a.slot
    elif a.slot is not None:
        raise UsageError(f"{a.action} takes no --slot")
    if a.action in MOVER_ACTIONS:
        if not a.source or not a.destination:
            raise UsageError("move needs --from STATION and --to STATION")
        out["source"], out["destination"] = a.source, a.destination
        if a.plate:
            out["plate"] = a.plate
    elif a.source or a.destination or a.plate:
        raise UsageError(f"{a.action} takes no --from, --to or --plate (only move does)")
    return out


def cmd_device_action(a: argparse.Namespace) -> int:
    if not a.reason.strip():
        raise UsageError("device-action needs --reason (it goes into the audit trail)")
    args = args_of(a)
    store, path = open_store(a)
    with store:
        return signed_queue(
            store, path, a, DEVICE_ACTION, Action.DEVICE_ACTION, None, args, a.reason
        )


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``device-action`` to the parser."""
    p = sub.add_parser(
        "device-action",
        help="a supervisor's manual device action through the engine (present a plate, "
        "open a gate, move a plate)",
        description="Ask the engine to do one manual action on one of its devices, and wait "
        "for its verdict.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("device", help="the device, as the workcell file names it")
    p.add_argument("action", choices=ACTIONS, help="what it does (below)")
    p.add_argument("--slot", type=int, help="the incubator's slot, from 1 (present, put-away)")
    p.add_argument("--from", dest="source", help="the station the arm takes the plate from")
    p.add_argument("--to", dest="destination", help="the station the arm puts it on")
    p.add_argument("--plate", help="the plate's label, for the record (move; optional)")
    p.add_argument("--reason", default="", help="why (required: it goes into the audit trail)")
    add_wait_option(p)
    add_db_options(p)
    p.set_defaults(func=cmd_device_action, run=None)
