"""A training record as TensorBoard event files (``gradviz export RUN.db --tensorboard DIR``).

>>> export_tensorboard("run.db", "runs/baseline")      # doctest: +SKIP
TensorBoardExport(logdir=..., run=1, iterations=120, layers=3, scalars=1080)

Scalars per iteration (the step is the iteration, the wall time the iteration's end):
``loss``, ``grad_norm`` (the total, before clipping), ``grad_norm_clipped`` where the
loop clipped, ``lr``, and per layer ``grad_norm/<layer>`` and ``update_ratio/<layer>``
(|Δ|/|p|), the layers and their norms as the run view's (the root of the sum of the
layer's parameters' squares; the model's own parameters are the layer ``(model)``).
A NaN or Inf is written as such; a layer without a gradient, or without a step, at an
iteration is left out there.

Written through the ``tensorboard`` package's own ``EventFileWriter`` (what
``torch.utils.tensorboard.SummaryWriter`` writes through), one ``Event`` per iteration
holding all of its scalars: SummaryWriter's one Event per scalar made files twice as
big and took 6 to 10 times as long. Without TensorFlow installed, tensorboard
checksums every byte in Python: about 8 s of CPU per million scalars (10,000
iterations x 50 layers), read from the record a thousand iterations at a time
(memory does not grow with the run).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from gradviz.errors import ExportError, GradvizError
from gradviz.model.runs.history import RunRecord

#: The tag of the model's own parameters (layer '').
MODEL_LAYER = "(model)"
INSTALL = 'pip install "gradviz[tensorboard]"'


@dataclass(frozen=True)
class TensorBoardExport:
    """What an export wrote: the folder, which run, and how many of each."""

    logdir: Path
    run: int
    iterations: int
    layers: int
    scalars: int


def tag_of(layer: str) -> str:
    return layer or MODEL_LAYER


def export_tensorboard(record: str | os.PathLike, logdir: str | os.PathLike, *,
                       run: int | None = None) -> TensorBoardExport:
    """Write run ``run`` of ``record`` (default: its latest, rank 0 of a distributed job)
    to event files in ``logdir`` (made if missing). One-line errors: a record that is
    not one, a folder that cannot be written, the ``tensorboard`` package missing."""
    try:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError as error:
        raise GradvizError(f"exporting to TensorBoard needs the tensorboard package: {INSTALL}"
                           ) from error
    folder = Path(logdir)
    with RunRecord(record) as opened:  # a bad record fails before the folder is made
        info, layers, iterations = opened.stream(run)
        _writable(folder)
        grad_tags = [f"grad_norm/{tag_of(layer)}" for layer in layers]
        ratio_tags = [f"update_ratio/{tag_of(layer)}" for layer in layers]
        try:
            writer = EventFileWriter(str(folder), max_queue_size=1000, flush_secs=60)
        except OSError as error:
            raise ExportError(f"cannot write TensorBoard files to {folder}: "
                              f"{error.strerror or error}") from None
        count = scalars = 0
        try:
            for point in iterations:
                row = point.row
                values = [Summary.Value(tag="loss", simple_value=row.loss),
                          Summary.Value(tag="grad_norm", simple_value=row.grad_norm)]
                if row.grad_norm_clipped is not None:
                    values.append(Summary.Value(tag="grad_norm_clipped",
                                                simple_value=row.grad_norm_clipped))
                if row.lr is not None:
                    values.append(Summary.Value(tag="lr", simple_value=row.lr))
                for j, (grad, ratio) in enumerate(zip(point.grad_norms, point.update_ratios)):
                    if point.nonfinite[j] or not math.isnan(grad):
                        values.append(Summary.Value(tag=grad_tags[j], simple_value=grad))
                    if not math.isnan(ratio):
                        values.append(Summary.Value(tag=ratio_tags[j], simple_value=ratio))
                writer.add_event(Event(wall_time=row.time, step=row.iteration,
                                       summary=Summary(value=values)))
                count += 1
                scalars += len(values)
        finally:
            try:
                writer.close()
            except OSError as error:  # the writer's thread failed: a full disk, say
                raise ExportError(f"cannot write TensorBoard files to {folder}: "
                                  f"{error.strerror or error}") from None
    return TensorBoardExport(folder, info.run, count, len(layers), scalars)


def _writable(folder: Path) -> None:
    """Make ``folder`` (and its parents), or say in one line why it cannot be written."""
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"cannot write TensorBoard files to {folder}: it is a file, not a "
                          "folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExportError(f"cannot write TensorBoard files to {folder}: "
                          f"{error.strerror or error}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write TensorBoard files to {folder}: it is not writable")
