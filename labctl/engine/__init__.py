"""The run engine: registers runs and carries them out on a workcell (see core)."""

from labctl.engine.core import Engine, EngineConfig, register_run

__all__ = ["Engine", "EngineConfig", "register_run"]
