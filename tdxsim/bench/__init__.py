"""Benchmarks of the simulator's hot paths (``tdxsim bench memory``); each returns rows of numbers
(docs/cli.md "``tdxsim bench``", docs/conventions.md §8)."""
