"""Benchmarks of the simulator's hot paths (``tdxsim bench memory``); each returns rows of numbers."""
