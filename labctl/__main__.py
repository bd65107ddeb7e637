"""``python -m labctl``: the same as the ``labctl`` command."""

from labctl.cli.main import main

# Guarded: a process started with the spawn method (the robot simulator's analysis
# process) imports the parent's main module again, and must not run the command twice.
if __name__ == "__main__":
    raise SystemExit(main())
