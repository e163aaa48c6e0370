"""The queue's pure core: job records and transitions, retry, schedules.

No I/O and no clock: every function takes ``now`` (and a random source where
it needs one), so stores, the worker, the simulator and the charts reuse it.
The public names are exported from :mod:`jobkit`.
"""
