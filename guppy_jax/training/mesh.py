"""Training on many devices: a `jax.sharding.Mesh` and where each array lives on it.

The mesh has two axes, `data` and `fsdp`. Every batch is split along its batch axis over
both (each device sees its own rows); parameters and optimizer state are replicated over
`data` and, when `fsdp` > 1, split over `fsdp` along their largest divisible axis (each
device keeps a slice and gathers the rest when it needs it). The train step itself does not
change: `jax.jit` compiles one program for the whole mesh from these placements and adds
the cross-device sums (the loss is the global masked sum over the global count of real
tokens, whatever the number of devices).

    mesh_shape("data=4,fsdp=2", 8)  ->  {"data": 4, "fsdp": 2}
    mesh_shape(None, 8)             ->  {"data": 8, "fsdp": 1}   (data parallel by default)

`jax.make_mesh` in jax 0.10 gives explicit axis types by default, under which Linen's
`Embed` fails to trace; the `Mesh` constructor used here gives automatic (GSPMD) axes in
every jax version this project supports.

With many processes (guppy_jax/distributed.py) the mesh spans the devices of all of them;
nothing else here changes.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["AXES", "Mesh", "MeshError", "mesh_shape", "make_mesh", "describe", "check_batch", "batch_sharding",
           "fsdp_axis", "leaf_sharding", "place_state", "place_batch"]
AXES = ("data", "fsdp")


class MeshError(ValueError):
    """A mesh that cannot be built from the devices, or a batch it cannot split."""


def mesh_shape(spec: str | None, n_devices: int) -> dict[str, int]:
    """Axis sizes from a `--mesh` value like "data=4,fsdp=2" (None: all devices on `data`);
    an axis left out gets what the others leave of `n_devices`."""
    if not spec:
        return {"data": n_devices, "fsdp": 1}
    sizes: dict[str, int] = {}
    for part in spec.split(","):
        name, _, value = part.strip().partition("=")
        if name not in AXES or not value.strip().isdigit() or int(value) < 1 or name in sizes:
            raise MeshError(f"--mesh {spec!r}: expected axes from {', '.join(AXES)} as name=size "
                            f"(for example data=4,fsdp=2), each once")
        sizes[name] = int(value)
    given = int(np.prod(list(sizes.values())))
    for name in AXES:
        if name not in sizes:
            sizes[name] = n_devices // given if n_devices % given == 0 else 0
    if sizes["data"] * sizes["fsdp"] != n_devices:
        raise MeshError(f"--mesh {spec!r} needs data x fsdp = the {n_devices} devices JAX sees")
    return {name: sizes[name] for name in AXES}


def make_mesh(shape: dict[str, int], devices=None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.array(devices).reshape(shape["data"], shape["fsdp"]), AXES)


def describe(mesh: Mesh) -> str:
    first = mesh.devices.flat[0]
    processes = len({d.process_index for d in mesh.devices.flat})
    return (f"{mesh.devices.size} {first.platform} device{'s' if mesh.devices.size > 1 else ''}"
            + (f" in {processes} processes" if processes > 1 else "") + ", mesh "
            + " x ".join(f"{name}={size}" for name, size in mesh.shape.items()))


def check_batch(batch_size: int, mesh: Mesh) -> None:
    ways = mesh.devices.size
    if batch_size % ways:
        raise MeshError(f"batch size {batch_size} does not split over the {ways} devices of the mesh "
                        f"({describe(mesh)}): use a multiple of {ways}")


def batch_sharding(mesh: Mesh, stacked: bool = False) -> NamedSharding:
    """Rows split over every device; a stack of k batches (k, B, T) keeps k whole."""
    rows = P(None, AXES) if stacked else P(AXES)
    return NamedSharding(mesh, rows)


def fsdp_axis(shape: tuple, n: int) -> int | None:
    """The axis an array is split along over an `fsdp` axis of size n: its largest axis that
    n divides (None: keep it whole on every device)."""
    if n == 1:
        return None
    return next((i for i in sorted(range(len(shape)), key=lambda i: -shape[i]) if shape[i] % n == 0), None)


def leaf_sharding(mesh: Mesh, shape: tuple) -> NamedSharding:
    """Replicated, or split over `fsdp` (fsdp_axis)."""
    split = fsdp_axis(shape, mesh.shape["fsdp"])
    if split is None:
        return NamedSharding(mesh, P())
    spec = [None] * len(shape)
    spec[split] = "fsdp"
    return NamedSharding(mesh, P(*spec))


def place_state(state, mesh: Mesh):
    """The TrainState's arrays (params, optimizer moments, counters) put on the mesh. With
    many processes each one builds the same state (same seed) and keeps its own part."""
    many = jax.process_count() > 1
    return jax.tree_util.tree_map(
        lambda x: jax.device_put(np.asarray(x) if many else x, leaf_sharding(mesh, np.shape(x)))
        if isinstance(x, (jax.Array, np.ndarray)) else x, state)


def local_rows(mesh: Mesh, batch_size: int) -> slice | None:
    """The rows of a (batch_size, T) batch that this process's devices hold, as one slice;
    None when they are all of them (one process) or not one run of rows."""
    if jax.process_count() == 1:
        return None
    held = {(index[0].start or 0, batch_size if index[0].stop is None else index[0].stop)
            for index in batch_sharding(mesh).addressable_devices_indices_map((batch_size, 1)).values()}
    starts, stops = sorted(a for a, _ in held), sorted(b for _, b in held)
    if any(stop != start for stop, start in zip(stops[:-1], starts[1:])):
        return None
    return slice(starts[0], stops[-1])


def place_batch(batch: dict, mesh: Mesh, stacked: bool = False) -> dict:
    """The batch's rows split over the mesh; with many processes each copies only the rows
    its own devices hold (distributed.global_batch)."""
    if jax.process_count() > 1:
        from .distributed import global_batch
        return global_batch(batch, batch_sharding(mesh, stacked))
    return jax.device_put(batch, batch_sharding(mesh, stacked))
