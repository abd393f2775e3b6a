"""Lowering and the default schedules of every kernel, per target."""
