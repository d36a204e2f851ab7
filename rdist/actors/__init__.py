"""Actors (as dask's): objects living on one worker, called from anywhere.

- :mod:`~rdist.actors.proxy`: :class:`Actor`, the proxy ``future.result()`` gives;
- :mod:`~rdist.actors.calls`: :class:`ActorFuture` and the two ways a call travels --
  straight to the worker's data server, or through Redis where it cannot be reached;
- :mod:`~rdist.actors.host`: the worker's side, holding the instances and running calls
  one at a time.
"""

from rdist.actors.calls import ActorFuture, ActorLost
from rdist.actors.host import ActorHost
from rdist.actors.proxy import Actor

__all__ = ["Actor", "ActorFuture", "ActorHost", "ActorLost"]
