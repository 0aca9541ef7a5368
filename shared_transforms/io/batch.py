"""Batch inference that goes on past a bad file: every good input is processed, every bad one is named.

A folder or datalist of scans is one run of a bundle's evaluator. :class:`BatchInputs` is the run's dataset: it
prepares the items one after another and, when an item is refused as bad input
(:class:`~shared_transforms.errors.InputError`: an unreadable or empty file, a NaN, an output that would replace a
user's file, ...), prints that item's one-line reason, records it and goes on with the next. Before an item is prepared,
the output files the run's writers will write for it are checked (their ``check_outputs(item)``), so an output that may
not be replaced is refused before anything is computed. An item whose preparation runs out of memory (a file within the
voxel limit whose data does not fit this machine) is that item's failure too; other errors (a bug) still stop the run,
and a fault of the machine (full disk, out of memory in the network) ends it with one ``error:`` line
(:func:`~shared_transforms.errors.describe_fault`).

:class:`BatchSummary` is the Ignite handler that writes ``<output_dir>/<bundle>_summary.json`` when the run ends
(which inputs were written, which failed and why) and then, if any failed, raises one
:class:`~shared_transforms.errors.InputError` whose message is the run's last line, so the command exits non-zero.

Under ``torchrun`` (a process group initialised before the run, as ``configs/multi_gpu_inference.json`` does), each
process takes every ``world_size``-th input from its rank on - the role of a ``DistributedSampler``, which an
iterable dataset cannot take - so each output is written once, by one process; the output names are decided on the
whole list before it is split, and the summary gathers every process's record (written by rank 0).

MONAI's ``Dataset`` stops at the first failing item, and Ignite has no "skip this iteration" event (an exception
ends the run), hence this module: an iterable dataset with no length, which MONAI's workflows accept
(``epoch_length`` is then found at the end of the epoch).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence

from monai.transforms import Compose, apply_transform
from torch.utils.data import IterableDataset

from ..engine.distributed import rank_and_world
from ..errors import InputError, find_input_error, find_out_of_memory, one_line
from .files import write_text_atomic


def output_writers(postprocessing) -> list:
    """The transforms in ``postprocessing`` (a Compose, a list or one transform) that can check their outputs."""
    if postprocessing is None:
        return []
    if isinstance(postprocessing, Compose):
        items = list(postprocessing.transforms)
    elif isinstance(postprocessing, Sequence):
        items = list(postprocessing)
    else:
        items = [postprocessing]
    out = []
    for t in items:
        out += (
            output_writers(t)
            if isinstance(t, Compose)
            else ([t] if callable(getattr(t, "check_outputs", None)) else [])
        )
    return out


class BatchInputs(IterableDataset):
    """The inputs of one inference run, prepared one by one; a bad one is reported and skipped.

    Args:
        data: inference items, ``[{"image": path, "output_stem": name}, ...]``
            (:func:`shared_transforms.io.datalist.inference_items`).
        transform: the preprocessing (a MONAI transform of one item).
        postprocessing: the run's postprocessing; its writers' ``check_outputs(item)`` run before ``transform``.

    After (or during) the iteration, ``started`` holds the items handed on to the evaluator and ``failed`` holds
    ``{"input": path, "reason": one line}`` for each item refused (this process's share, see the module docstring).
    """

    def __init__(self, data: Iterable[Mapping], transform=None, postprocessing=None):
        super().__init__()
        self.data = list(data)
        self.transform = transform
        self.postprocessing = postprocessing
        self.started: list[dict] = []
        self.failed: list[dict] = []
        self.errors: list[InputError] = []

    def __iter__(self) -> Iterator:
        self.started, self.failed, self.errors = [], [], []
        writers = output_writers(self.postprocessing)
        rank, world = rank_and_world()
        for item in self.data[rank::world]:
            try:
                for writer in writers:
                    writer.check_outputs(item)
                out = apply_transform(self.transform, dict(item)) if self.transform is not None else dict(item)
            except Exception as err:  # bad input, or an input too large for memory, is skipped; a bug stops the run
                found = find_input_error(err) or _too_large(err, item)
                if found is None:
                    raise
                self.failed.append({"input": str(item.get("image", "")), "reason": str(found)})
                self.errors.append(found)
                print(f"error: {found} (skipped; the run goes on)", file=sys.stderr, flush=True)
                continue
            self.started.append(dict(item))
            yield out


def _too_large(err: BaseException, item: Mapping) -> InputError | None:
    """An item whose preparation ran out of memory (a file whose header is within the voxel limit but whose data
    does not fit this machine) as that item's failure; None for any other error."""
    oom = find_out_of_memory(err)
    if oom is None:
        return None
    what = one_line(oom)[:160] or type(oom).__name__
    return InputError(
        item.get("image"),
        f"does not fit in this machine's memory ({what}); try it alone, with a coarser --target_spacing, or on a "
        "machine with more memory",
    )


class BatchSummary:
    """Ignite handler: at the end of an inference run, write ``<output_dir>/<bundle_name>_summary.json`` and raise
    one :class:`InputError` when any input failed (so the command exits non-zero after the good ones are written).

    Args:
        dataset: the run's :class:`BatchInputs`.
        output_dir: where the outputs and the summary go.
        bundle_name: names the summary file.

    The summary holds ``{"bundle", "inputs", "succeeded": [{"input", "output_stem"}], "failed": [{"input",
    "reason"}]}``. Written by this bundle only; a re-run replaces it. After a run with no failure the summary line
    is also printed when the process exits (``atexit``), so that it is the command's last line (Ignite logs its
    own "Engine run finished" after the handlers of ``COMPLETED``).
    """

    def __init__(self, dataset: BatchInputs, output_dir: str, bundle_name: str):
        self.dataset, self.output_dir, self.bundle_name = dataset, output_dir, bundle_name
        self.summary_path = os.path.join(os.fspath(output_dir), f"{bundle_name}_summary.json")
        self._repeat_registered = False

    def attach(self, engine) -> None:
        from ignite.engine import Events

        self.check_replaceable()
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def check_replaceable(self) -> None:
        """Refuse, before the run, a summary path that holds anything but an earlier summary of this bundle."""
        if not os.path.lexists(self.summary_path):
            return
        try:
            with open(self.summary_path) as f:
                ours = json.load(f).get("bundle") == self.bundle_name
        except (OSError, ValueError, AttributeError):  # unreadable, not JSON, not an object
            ours = False
        if not ours or not os.path.isfile(self.summary_path):
            raise InputError(
                self.summary_path,
                f"exists and is not a {self.bundle_name} run summary; refusing to "
                "overwrite it - remove it or choose another --output_dir",
            )

    def summary(self) -> dict:
        """The run's record: this process's, or under torchrun every process's, gathered (inputs in list order)."""
        ok = [{"input": str(it.get("image", "")), "output_stem": it.get("output_stem")} for it in self.dataset.started]
        failed = list(self.dataset.failed)
        _, world = rank_and_world()
        if world > 1:
            import torch.distributed as dist

            parts: list = [None] * world
            dist.all_gather_object(parts, (ok, failed))
            order = {str(it.get("image", "")): i for i, it in enumerate(self.dataset.data)}
            ok = sorted((x for part in parts for x in part[0]), key=lambda x: order.get(x["input"], 0))
            failed = sorted((x for part in parts for x in part[1]), key=lambda x: order.get(x["input"], 0))
        return {
            "bundle": self.bundle_name,
            "inputs": len(ok) + len(failed),
            "succeeded": ok,
            "failed": failed,
            **({"processes": world} if world > 1 else {}),
        }

    def completed(self, engine=None) -> dict:
        summary = self.summary()
        rank, _ = rank_and_world()
        if rank == 0:
            write_text_atomic(self.summary_path, json.dumps(summary, indent=2) + "\n")
        failed, n = summary["failed"], summary["inputs"]
        line = f"[{self.bundle_name}] {n - len(failed)} of {n} inputs written; summary: {os.path.abspath(self.summary_path)}"
        print(line, flush=True)
        if not failed and rank == 0 and not self._repeat_registered:
            # Ignite logs "Engine run finished" after COMPLETED: repeat the summary as the command's last line
            atexit.register(print, line, flush=True)
            self._repeat_registered = True
        if n == 1 and failed and self.dataset.errors:  # one input: its own reason is the last line
            raise self.dataset.errors[0]
        if failed:
            more = f", and {len(failed) - 1} more" if len(failed) > 1 else ""
            raise InputError(
                self.summary_path,
                f"{len(failed)} of {n} inputs failed and were skipped, "
                f"{n - len(failed)} written (first: {failed[0]['reason']}{more}); this file lists each",
            )
        return summary
