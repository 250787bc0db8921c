"""Training engine: trainer, evaluation, checkpoints, metrics, optimizers, schedules and losses."""
