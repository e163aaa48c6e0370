"""The ``jobkit`` command line; the entry point is :mod:`jobkit.__main__`.

- ``main.py``: the parser, the list of commands (:data:`~jobkit.cli.main.COMMANDS`)
  and how a command runs and fails;
- ``options.py``: argument types, the shared options and ``add_command``;
- ``common.py``: errors, opening the app and the store, printing;
- one module per group of commands: ``worker``, ``enqueue``, ``jobs``
  (jobs, show, wait, dead), ``operate`` (requeue, discard, cancel, purge),
  ``stats`` (stats, metrics), ``schedules``, ``dashboard``.

A new command is an ``add_*`` and a handler function in its group's module,
and one line in ``COMMANDS``. A group's module imports only ``common`` and
``options`` of the command line, never another group's
(``tests/test_layers.py`` checks it).
"""
