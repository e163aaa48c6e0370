"""Observability: metrics, attempt spans, queue depth, Prometheus text, logs.

Spans (``spans.py``) and depth (``depth.py``) are the one model of attempts
and queue depth: the simulator's trace is built on them, and the charts of
:mod:`jobkit.charts` (public) draw them. The other public names are exported
from :mod:`jobkit`.
"""
