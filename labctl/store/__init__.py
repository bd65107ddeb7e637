"""SQLite store: runs, tasks, jobs, prompts, alarms, commands and the audit trail."""
