"""What labctl writes for people: the plan as text, the schedule drawing, the batch record."""
