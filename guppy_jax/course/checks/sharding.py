"""Chapter 12's exercise: a batch put on a mesh, its rows split over "data"."""
from __future__ import annotations

import numpy as np

from .. import Wrong


def _batch(rows: int) -> dict:
    rs = np.random.RandomState(0)
    inputs_BT = rs.randint(3, 100, (rows, 5)).astype(np.int32)
    return {"inputs": inputs_BT, "targets": np.roll(inputs_BT, -1, axis=1),
            "loss_mask": rs.rand(rows, 5) < 0.8, "weights_B": rs.rand(rows).astype(np.float32)}


def _spec(spec) -> tuple:
    """The spec with its trailing Nones dropped: P("data") and P("data", None) say the same."""
    entries = list(spec)
    while entries and entries[-1] is None:
        entries.pop()
    return tuple(entries)


def shard_batch(fn) -> str:
    import jax
    from jax.sharding import Mesh, NamedSharding

    devices = jax.devices()
    mesh = Mesh(np.array(devices), ("data",))
    batch = _batch(2 * len(devices))
    got = fn(dict(batch), mesh)
    if not isinstance(got, dict) or set(got) != set(batch):
        raise Wrong(f"Return a dict with the batch's keys {sorted(batch)}, one array each; got "
                    f"{type(got).__name__}{' with keys ' + str(sorted(got)) if isinstance(got, dict) else ''}.")
    for name, want in batch.items():
        x = got[name]
        if not isinstance(x, jax.Array):
            raise Wrong(f"batch[{name!r}] came back as a {type(x).__name__}, still on the host: "
                        "put it on the devices with jax.device_put(x, sharding).")
        if not isinstance(x.sharding, NamedSharding):
            raise Wrong(f"batch[{name!r}] has a {type(x.sharding).__name__}, which names no mesh axis: give "
                        "jax.device_put a NamedSharding(mesh, PartitionSpec(...)).")
        spec = _spec(x.sharding.spec)
        if spec != ("data",):
            hint = (" That is a copy on every device: name the mesh axis for the first (row) axis."
                    if spec == () else " Split axis 0 (the rows) over \"data\" and leave the other axes whole.")
            raise Wrong(f"batch[{name!r}] is placed as {x.sharding.spec}, not PartitionSpec('data').{hint}")
        if x.sharding.mesh.shape != mesh.shape or list(x.sharding.mesh.devices.flat) != devices:
            raise Wrong(f"batch[{name!r}] is on another mesh ({dict(x.sharding.mesh.shape)}): use the mesh you "
                        "were given.")
        if x.dtype != want.dtype or x.shape != want.shape or not np.array_equal(np.asarray(x), want):
            raise Wrong(f"batch[{name!r}] changed on the way: {x.dtype}{x.shape} against {want.dtype}{want.shape}, "
                        "or other values. Place the arrays; do not convert or reshape them.")
        rows = sorted(shard.data.shape[0] for shard in x.addressable_shards)
        if rows != [2] * len(devices):
            raise Wrong(f"batch[{name!r}]'s devices hold {rows} rows each, not 2 on each of {len(devices)}.")
    return (f"{len(batch)} arrays of {2 * len(devices)} rows, each split as PartitionSpec('data') over "
            f"{len(devices)} device{'s' if len(devices) > 1 else ''}, values unchanged.")


CHECKS = {"shard_batch": shard_batch}
