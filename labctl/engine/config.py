"""The engine's timing, in seconds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineConfig:
    """Timing of the loop, in seconds."""

    poll_s: float = 5.0  # first poll interval once an operation passed its expected end
    poll_max_s: float = 30.0  # the interval grows to this for operations that run long
    recovery_timeout_s: float = 900.0  # after this the recovery prompt's default applies
    alarm_check_s: float = 120.0  # device alarms (door, climate, offline) are read this often
    climate_record_s: float = 1800.0  # incubator readings are written to the trail this often
    answer_timeout_s: float = 1800.0  # an unanswered task prompt raises an alarm after this
    late_margin_s: float = 60.0  # a chain later than planned by this much triggers a re-plan
    learn_last: int = 9  # planned durations follow the median overrun of this many past jobs
    learn_first: int = 3  # ... once this many of the kind have finished (one may be a one-off)
    # Liquid-handling jobs planned within this are prepared ahead (labctl.devices.Preparable:
    # a robot gets a new protocol to analyse up to two days before its first use, not as the
    # plate waits on its deck).
    prepare_ahead_s: float = 2 * 86400.0
    # A device that refuses a job because it is busy or initialising is asked again after
    # busy_retry_s, doubling up to busy_retry_max_s; after busy_give_up_s a person is asked.
    busy_retry_s: float = 5.0
    busy_retry_max_s: float = 120.0
    busy_give_up_s: float = 1200.0
    # A batch's leader waits this long for a rider's plate still on its way to the deck
    # (and a rider on the deck this long for its leader) before each goes alone.
    batch_wait_s: float = 300.0
    actor: str = "engine"
