"""rdist's own all-to-all exchange for dask.dataframe shuffles (``shuffle_method="p2p"``)
and dask.array rechunks (``array.rechunk.method="p2p"``).

dask lowers a P2P shuffle (``shuffle``, ``set_index``, ``sort_values``) to three kinds of
tasks: one *transfer* per input partition, one *barrier*, one *unpack* per output
partition. dask.distributed runs them through its worker plugin; rdist has none, so the
client rewrites those tasks at submission (:mod:`rdist.shuffle.rewrite`) into rdist's own:

- ``transfer`` (:mod:`rdist.shuffle.tasks`) splits its input once on the worker that holds
  it and sends the pieces, batched per destination, straight to the worker owning each
  output partition over the data plane (``shuffle-push``, :mod:`rdist.shuffle.service`);
- ``barrier`` waits for every transfer (it depends on them all) and carries the run on;
- ``unpack`` runs on the owner (a worker restriction chosen from the live workers when the
  graph is submitted) and assembles its partition from what arrived there.

Received pieces stay serialized, in memory up to a budget, on disk beyond it
(:mod:`rdist.shuffle.inbox`). The graph has O(inputs + outputs) tasks.

A rechunk is the same exchange with array pieces: dask lowers it into groups of chunks,
each an exchange of its own; :mod:`rdist.shuffle.rechunk` (pure) says which slice of an
input chunk goes to which output chunk and where it lands, :mod:`rdist.shuffle.arrays` has
its transfer and unpack. A group of one input chunk needs no exchange: its outputs are
slices of that chunk, cut where it is.
"""

from rdist.shuffle.rewrite import rewrite_p2p

__all__ = ["rewrite_p2p"]
