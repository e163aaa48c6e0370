"""The worker: claims jobs from a queue's store and runs their handlers.

The public names are exported from :mod:`jobkit`.
"""
