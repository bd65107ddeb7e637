"""What the console shows, computed from the run database: plain Python, no Qt (STYLE.md 8).

Views take these frozen dataclasses and draw them; the functions take a
:class:`~labctl.store.Store` (read only, except the few that write operator commands or
register a run the way the CLI does) and a time ``now`` from the injected clock. They run on
the console's worker thread, never on the GUI thread, so they may take a few hundred
milliseconds.

One module a subject:

- :mod:`.common`: input errors, times as text, the fields of task and job rows;
- :mod:`.runs`: the runs table and today's manual tasks;
- :mod:`.timeline`: bars and lanes of the Gantt chart;
- :mod:`.devices`: device states, climate readings, alarms;
- :mod:`.prompts`: open prompts and the answers they take;
- :mod:`.commands`: operator commands (pause, skip, answer, ...), their checks and verdicts;
- :mod:`.engine`: whether an engine carries the runs out (running, held, stale, down);
- :mod:`.audit`: audit pages and the batch record;
- :mod:`.protocol`: the run's locked protocol, plan, diagram and prep sheets;
- :mod:`.new_run`: checking a protocol file, ranking start dates, registering a run;
- :mod:`.snapshot`: the snapshot of all of the above, kept up to date from the change feed.

The console's own modules import from the subject modules; this package re-exports their
public names for scripts, benches and tests (``from labctl.gui import models as m``).
"""

from __future__ import annotations

from labctl.gui.models.alarms import (
    alarm_sentence,
    plain_words,
    severity_word,
    worst_first,
)
from labctl.gui.models.audit import (
    EventFilter,
    EventPage,
    EventRow,
    batch_record,
    event_page,
    event_row,
)
from labctl.gui.models.commands import (
    IRREVERSIBLE_VERBS,
    QUEUED_TEXT,
    CommandRequest,
    SignatureNeeded,
    Signing,
    SkippableTask,
    Verdict,
    abort,
    acknowledge,
    answer,
    choice_action,
    confirm_store,
    describe_command,
    pause,
    release,
    resume,
    run_command,
    skip,
    skippable_tasks,
    submit,
    submit_all,
    verdict_of,
)
from labctl.gui.models.common import (
    ACTIVE_RUN_STATES,
    TERMINAL_JOB_STATES,
    ConsoleInputError,
    RunData,
    countdown_text,
    duration_text,
    float_or_none,
    hhmm,
    job_duration_s,
    job_label,
    job_params,
    local,
    main_job,
    task_json,
    task_key_of,
    task_plate,
    task_title,
    tone_of,
    tzinfo,
    when_text,
    workcell_zone,
    zone_abbr,
)
from labctl.gui.models.devices import (
    AlarmRow,
    ClimateReading,
    DeviceRow,
    climate_of,
    device_rows,
    is_device,
)
from labctl.gui.models.engine import EngineView, engine_view, training_view
from labctl.gui.models.new_run import (
    DEFAULT_OPERATOR_HOURS,
    NewRunRequest,
    ParamInfo,
    ProtocolCheck,
    StartSuggestion,
    WorkcellCheck,
    check_protocol_text,
    check_workcell,
    register_new_run,
    suggest_start_dates,
)
from labctl.gui.models.prompts import (
    PromptView,
    QcGate,
    build_answer,
    missing_qc,
    parse_number,
    prompt_view,
    qc_failures,
    qc_values,
)
from labctl.gui.models.protocol import (
    PlanRow,
    ProtocolInfo,
    diagram_png,
    diagram_png_isolated,
    plan_of_text,
    plan_rows,
    prep_html,
    protocol_info,
)
from labctl.gui.models.runs import RunRow, TodayItem, protocol_day, run_row, today_html, today_items
from labctl.gui.models.snapshot import Snapshot, SnapshotLoader
from labctl.gui.models.timeline import Bar, Lane, lanes, run_bars
from labctl.gui.models.urgency import AT_RISK_S, Urgency, urgency
from labctl.store.models import Command  # what submit() returns

__all__ = [
    "ACTIVE_RUN_STATES",
    "AT_RISK_S",
    "Urgency",
    "WorkcellCheck",
    "alarm_sentence",
    "check_workcell",
    "is_device",
    "plain_words",
    "severity_word",
    "urgency",
    "workcell_zone",
    "worst_first",
    "zone_abbr",
    "AlarmRow",
    "Bar",
    "ClimateReading",
    "Command",
    "CommandRequest",
    "ConsoleInputError",
    "DEFAULT_OPERATOR_HOURS",
    "DeviceRow",
    "EngineView",
    "EventFilter",
    "EventPage",
    "EventRow",
    "IRREVERSIBLE_VERBS",
    "Lane",
    "NewRunRequest",
    "ParamInfo",
    "PlanRow",
    "PromptView",
    "QUEUED_TEXT",
    "ProtocolCheck",
    "ProtocolInfo",
    "QcGate",
    "RunData",
    "RunRow",
    "SignatureNeeded",
    "Signing",
    "SkippableTask",
    "Snapshot",
    "SnapshotLoader",
    "StartSuggestion",
    "TERMINAL_JOB_STATES",
    "TodayItem",
    "Verdict",
    "abort",
    "acknowledge",
    "answer",
    "batch_record",
    "build_answer",
    "choice_action",
    "check_protocol_text",
    "climate_of",
    "confirm_store",
    "countdown_text",
    "describe_command",
    "device_rows",
    "diagram_png",
    "diagram_png_isolated",
    "duration_text",
    "engine_view",
    "event_page",
    "event_row",
    "float_or_none",
    "hhmm",
    "job_duration_s",
    "job_label",
    "job_params",
    "lanes",
    "local",
    "main_job",
    "missing_qc",
    "parse_number",
    "pause",
    "plan_of_text",
    "plan_rows",
    "prep_html",
    "prompt_view",
    "protocol_day",
    "protocol_info",
    "qc_failures",
    "qc_values",
    "register_new_run",
    "release",
    "resume",
    "run_bars",
    "run_command",
    "run_row",
    "skip",
    "skippable_tasks",
    "submit",
    "submit_all",
    "suggest_start_dates",
    "task_json",
    "task_key_of",
    "task_plate",
    "task_title",
    "today_html",
    "today_items",
    "tone_of",
    "training_view",
    "tzinfo",
    "verdict_of",
    "when_text",
]
