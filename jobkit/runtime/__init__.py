"""The structured runtime: spawning, supervision, join sets, intervals, tokens.

It knows nothing of jobs or queues; everything above builds on it. The public
names are exported from :mod:`jobkit`.
"""
