"""The :class:`jobkit.Queue` facade: tasks, enqueueing, inspection, schedules.

The public names are exported from :mod:`jobkit`.
"""
