"""Observability: metrics, Prometheus text, structured logs.

The charts that draw them are the public module :mod:`jobkit.charts`; the
other public names are exported from :mod:`jobkit`.
"""
