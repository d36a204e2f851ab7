"""The scheduler: a pure state machine inside a thin Redis shell.

The pure core (no Redis, sockets, threads or clocks; events in, instructions out):

- ``model``: task states, ``Task``, ``WorkerInfo``, policy constants, the stored record
- ``events``: the events the core consumes and the instructions it emits
- ``interface``: what the rooms below may use of the state (``Scheduling``)
- ``state``: ``SchedulerState``, which holds the tables, routes each event to its room,
  logs every transition and tells a key's ``story``
- the rooms: ``transitions`` (the table: every change of a task's state), ``lifecycle``
  (graphs, releases, cancels, results), ``placement`` (where and when a task runs),
  ``failures`` (lost workers and data, errors, retries, restart), ``dataops`` (scatter,
  replicas, worker status, barriers), ``stealing``, ``coassign``, ``recovery``

The shell: ``server`` (the read loop and leadership), ``inbound`` (stream entries to
events, through the wire records), ``outbox`` (instructions to writes, through the store's
façades), ``restore`` (what a new scheduler reads back).
"""
