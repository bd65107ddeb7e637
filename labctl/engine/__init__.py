"""The run engine: registers runs and carries them out on a workcell (see ``loop``)."""

from labctl.engine.config import EngineConfig
from labctl.engine.loop import Engine
from labctl.engine.register import register_run

__all__ = ["Engine", "EngineConfig", "register_run"]
