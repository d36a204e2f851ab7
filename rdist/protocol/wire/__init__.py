"""Typed wire records: every stream message and stored record rdist exchanges.

One class per kind of message or record, each with ``encode()`` and a validating
``decode()``; a :class:`Channel` per stream decodes its entries (and bundles). Anything
that does not have the shape its reader needs raises one :class:`MalformedMessage` naming
the stream and the field -- this package is the one place where bad input is recognised.

- :mod:`~rdist.protocol.wire.to_scheduler`: the ``sched`` stream (:data:`SCHEDULER`)
- :mod:`~rdist.protocol.wire.to_worker`: a worker's stream (:data:`WORKER`)
- :mod:`~rdist.protocol.wire.to_client`: a client's stream (:data:`CLIENT`)
- :mod:`~rdist.protocol.wire.records`: hashes (tasks, workers, clients) and the
  informational streams (heartbeats, events, task stream)
- :mod:`~rdist.protocol.wire.extension`: shared state, actors, plugins (and the ``nanny``
  stream, :data:`NANNY`)
- :mod:`~rdist.protocol.wire.stacks`: call stacks of running tasks, on request
- :mod:`~rdist.protocol.wire.retire`: retiring workers and shutting the cluster down
- :mod:`~rdist.protocol.wire.amm`: the Active Memory Manager's requests and answers
- :mod:`~rdist.protocol.wire.logs`: the lines of the log buffers
- :mod:`~rdist.protocol.wire.base`: the codecs and record bases they are made of
"""

from rdist.protocol.wire.amm import *  # noqa: F403
from rdist.protocol.wire.amm import __all__ as _amm
from rdist.protocol.wire.base import (
    BUNDLE_OP,
    MAX_MESSAGE_BYTES,
    Channel,
    MalformedMessage,
    Message,
    Record,
    bundle,
    pack,
    unpack,
)
from rdist.protocol.wire.diagnostics import ProfileBatch, SpanTotals
from rdist.protocol.wire.exchange import RestartTasks
from rdist.protocol.wire.extension import *  # noqa: F403
from rdist.protocol.wire.extension import __all__ as _extension
from rdist.protocol.wire.logs import *  # noqa: F403
from rdist.protocol.wire.logs import __all__ as _logs
from rdist.protocol.wire.records import *  # noqa: F403
from rdist.protocol.wire.records import __all__ as _records
from rdist.protocol.wire.recovery import *  # noqa: F403
from rdist.protocol.wire.recovery import __all__ as _recovery
from rdist.protocol.wire.retire import *  # noqa: F403
from rdist.protocol.wire.retire import __all__ as _retire
from rdist.protocol.wire.stacks import *  # noqa: F403
from rdist.protocol.wire.stacks import __all__ as _stacks
from rdist.protocol.wire.to_client import *  # noqa: F403
from rdist.protocol.wire.to_client import __all__ as _to_client
from rdist.protocol.wire.to_scheduler import *  # noqa: F403
from rdist.protocol.wire.to_scheduler import __all__ as _to_scheduler
from rdist.protocol.wire.to_worker import *  # noqa: F403
from rdist.protocol.wire.to_worker import __all__ as _to_worker

__all__ = [  # noqa: PLE0604
    "BUNDLE_OP",
    "MAX_MESSAGE_BYTES",
    "Channel",
    "MalformedMessage",
    "Message",
    "ProfileBatch",
    "Record",
    "RestartTasks",
    "SpanTotals",
    "bundle",
    "pack",
    "unpack",
    *_amm,
    *_extension,
    *_logs,
    *_records,
    *_stacks,
    *_retire,
    *_recovery,
    *_to_client,
    *_to_scheduler,
    *_to_worker,
]
