"""Runnable examples of jobkit inside real applications.

- :mod:`jobkit.examples.webapp`: an HTTP API (Starlette served by Hypercorn
  on trio) whose requests enqueue jobs that a worker in the same process
  runs, next to a periodic clean-up; one configuration, one store, one
  shutdown token. Run it with ``python -m jobkit.examples.webapp``.
- :mod:`jobkit.examples.accounts`: the example's own database (users and an
  outbox of sent e-mails), kept apart from jobkit's tables.
- :mod:`jobkit.examples.timeline`: reads the example's structured log lines
  back into a timeline of its lifecycle steps, and charts the shutdown.
- :mod:`jobkit.examples.hosts`: worker hosts on one PostgreSQL database, a
  network link between one of them and the server that can be cut, and a
  chart of which host ran which job when (chapter 9 of the book).

The web app and its helpers need the ``web`` extra: ``pip install 'jobkit[web]'``.
"""
