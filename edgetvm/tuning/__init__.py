"""Autotuning with meta_schedule over TVM RPC, and the database that keeps its records."""
