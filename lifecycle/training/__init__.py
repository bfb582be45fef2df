"""Training machinery shared by every stage: optimizers and schedules, callbacks."""
