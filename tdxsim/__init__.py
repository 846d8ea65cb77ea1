"""tdxsim, the shell on top of the stack: the ``tdxsim`` command line, ``make demo`` and the benchmarks.

It starts and drives the three processes (``host``, ``guest``, ``attest``) and nothing imports it
(docs/architecture.md).
"""
