"""The inference worker shared by every session in the process.

Why one worker: a fusion call costs about as much at batch 32 as at batch 1 (Python and
kernel-launch overhead dominate), so windows from many sessions are run together rather
than one model per session (users' complaint no. 4 about streaming systems).

Policy: a call starts once the oldest pending window has waited `max_wait_ms` or
`max_batch` windows are pending, whichever is first; while a call runs, the next batch
gathers, so under load no extra wait is added. Windows are taken round-robin across
sessions, so one busy session cannot starve the others. The model runs in a
single-thread executor, never on the event loop. The queue is bounded: when full,
`submit` raises WorkerOverloaded at once instead of letting latency grow.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from .model.types import FusionOutput, MultimodalBatch

log = logging.getLogger(__name__)


class WorkerOverloaded(RuntimeError):
    """The worker's queue (or one session's share of it) is full; the window was not queued."""


class WorkerClosed(RuntimeError):
    """The worker is closing or closed and takes no more windows."""


class FusionModelLike(Protocol):
    """What the worker needs from a model: FusionModel and test modules both fit."""

    def __call__(self, batch: MultimodalBatch, *, imagine: str) -> FusionOutput: ...


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """One window of one session, as a batch of size 1."""

    session: str
    batch: MultimodalBatch


@dataclass
class InferenceMetrics:
    """Counters since start; model_ms keeps the most recent calls only (bounded)."""

    calls: int = 0
    windows: int = 0
    rejected: int = 0
    failed: int = 0
    queue_depth: int = 0
    max_queue_depth: int = 0
    batch_sizes: Counter[int] = field(default_factory=Counter)
    model_ms: deque[float] = field(default_factory=lambda: deque(maxlen=2048))

    def summary(self) -> dict[str, object]:
        """A JSON-friendly snapshot for logs and the bench command."""
        ms = sorted(self.model_ms)
        return {
            "calls": self.calls,
            "windows": self.windows,
            "rejected": self.rejected,
            "failed": self.failed,
            "queue_depth": self.queue_depth,
            "max_queue_depth": self.max_queue_depth,
            "batch_sizes": dict(sorted(self.batch_sizes.items())),
            "model_ms_mean": statistics.fmean(ms) if ms else None,
            "model_ms_p50": ms[len(ms) // 2] if ms else None,
            "model_ms_p95": ms[min(len(ms) - 1, int(0.95 * len(ms)))] if ms else None,
        }


def stack_windows(batches: Sequence[MultimodalBatch]) -> MultimodalBatch:
    """Concatenate batches along the batch axis, zero-padding each modality to its longest T.

    Padding is masked (mask False), so a model that honours masks gives every sample the
    same output as it would alone. Labels and ids are kept only when every batch has them.
    """
    if not batches:
        raise ValueError("stack_windows needs at least one batch")
    keys = list(batches[0].features)
    features: dict[str, Tensor] = {}
    masks: dict[str, Tensor] = {}
    for m in keys:
        parts = [b.features.get(m) for b in batches]
        if any(p is None or m not in b.masks for p, b in zip(parts, batches, strict=True)):
            raise ValueError(f"modality {m!r} is missing from some batches")
        dims = {p.shape[-1] for p in parts}
        if len(dims) != 1:
            raise ValueError(f"modality {m!r} has different feature sizes: {sorted(dims)}")
        features[m], masks[m] = _stack_padded(
            [(p, b.masks[m]) for p, b in zip(parts, batches, strict=True)], batches
        )
    labels = [b.labels for b in batches]
    ids = [b.ids for b in batches]
    recalled = recalled_mask = None
    if any(b.recalled is not None and b.recalled_mask is not None for b in batches):
        recalled, recalled_mask = _stack_padded(
            [
                None
                if b.recalled is None or b.recalled_mask is None
                else (b.recalled, b.recalled_mask)
                for b in batches
            ],
            batches,
        )
    quality = [b.quality for b in batches]
    return MultimodalBatch(
        features=features,
        masks=masks,
        present=torch.cat([b.present for b in batches]),
        labels=None if any(lab is None for lab in labels) else torch.cat(labels),
        ids=None if any(i is None for i in ids) else [x for i in ids for x in i],
        recalled=recalled,
        recalled_mask=recalled_mask,
        quality=None if any(q is None for q in quality) else torch.cat(quality),
    )


def _stack_padded(
    parts: Sequence[tuple[Tensor, Tensor] | None], batches: Sequence[MultimodalBatch]
) -> tuple[Tensor, Tensor]:
    """Per batch (x (n, t, D), mask (n, t)), or None for all-padding rows: zero-padded to
    the longest t and concatenated along the batch axis -> (Σn, T, D), (Σn, T)."""
    present = [p for p in parts if p is not None]
    first = present[0][0]
    longest = max(x.shape[1] for x, _ in present)
    total = sum(b.batch_size for b in batches)
    x = first.new_zeros(total, longest, first.shape[-1])
    mask = torch.zeros(total, longest, dtype=torch.bool, device=first.device)
    row = 0
    for part, b in zip(parts, batches, strict=True):
        if part is not None:
            t = part[0].shape[1]
            x[row : row + b.batch_size, :t] = part[0]
            mask[row : row + b.batch_size, :t] = part[1]
        row += b.batch_size
    return x, mask


def split_output(output: FusionOutput, count: int) -> list[FusionOutput]:
    """One FusionOutput of batch size 1 per sample, on the CPU; aux tensors per sample only."""

    def row(t: Tensor, i: int) -> Tensor:
        return t[i : i + 1].detach().cpu()

    per_sample_aux = {k: v for k, v in output.aux.items() if v.ndim and v.shape[0] == count}
    return [
        FusionOutput(
            score=row(output.score, i),
            confidence=row(output.confidence, i),
            weights=row(output.weights, i),
            gain=row(output.gain, i),
            imagined=row(output.imagined, i),
            aux={k: row(v, i) for k, v in per_sample_aux.items()},
        )
        for i in range(count)
    ]


@dataclass(slots=True)
class _Pending:
    request: InferenceRequest
    future: asyncio.Future[FusionOutput]
    enqueued: float


class InferenceWorker:
    """Micro-batches windows from all sessions into model calls; see the module docstring.

    An nn.Module model is put in eval mode: serving must be deterministic. Results come
    back on the CPU with batch size 1. A request that fails fails only its own caller:
    when a batched call raises, its windows are retried one by one.
    """

    def __init__(
        self,
        model: FusionModelLike,
        *,
        imagine: str = "gate",
        max_batch: int = 32,
        max_wait_ms: float = 3.0,
        max_queue: int = 256,
        max_per_session: int = 8,
        device: torch.device | str | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_per_session < 1:
            raise ValueError("max_batch, max_queue and max_per_session must be >= 1")
        if isinstance(model, torch.nn.Module):
            model.eval()
        self.model = model
        self.imagine = imagine
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.max_per_session = max_per_session
        self.device = torch.device(device) if device is not None else _model_device(model)
        self.metrics = InferenceMetrics()
        self._queues: dict[str, deque[_Pending]] = {}
        self._pending = 0
        self._arrived = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-mmsa-infer")

    async def __aenter__(self) -> InferenceWorker:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start the batching task on the running loop (submit also starts it)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="stream-mmsa-inference"
            )

    async def submit(self, request: InferenceRequest) -> FusionOutput:
        """Run one window through the model; raises WorkerOverloaded when the queue is full."""
        if self._closing or (self._task is not None and self._task.done()):
            raise WorkerClosed("inference worker is closed")
        if request.batch.batch_size != 1:
            size = request.batch.batch_size
            raise ValueError(f"submit one window at a time (got batch size {size})")
        queue = self._queues.get(request.session)
        if self._pending >= self.max_queue:
            self.metrics.rejected += 1
            raise WorkerOverloaded(f"inference queue full ({self.max_queue} windows pending)")
        if queue is not None and len(queue) >= self.max_per_session:
            self.metrics.rejected += 1
            raise WorkerOverloaded(
                f"session {request.session!r} has {len(queue)} windows pending "
                f"(limit {self.max_per_session})"
            )
        self.start()
        future: asyncio.Future[FusionOutput] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(request.session, deque()).append(
            _Pending(request, future, time.monotonic())
        )
        self._set_pending(self._pending + 1)
        self._arrived.set()
        return await future

    async def close(self) -> None:
        """Stop taking windows, finish the queued ones, release the executor thread."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=False)

    async def _run(self) -> None:
        try:
            while True:
                if self._pending == 0:
                    if self._closing:
                        return
                    self._arrived.clear()
                    await self._arrived.wait()
                    continue
                oldest = min(q[0].enqueued for q in self._queues.values())
                while self._pending < self.max_batch and not self._closing:
                    remaining = oldest + self.max_wait - time.monotonic()
                    if remaining <= 0:
                        break
                    self._arrived.clear()
                    try:
                        await asyncio.wait_for(self._arrived.wait(), remaining)
                    except TimeoutError:
                        break
                items = self._take()
                if items:
                    await self._run_batch(items)
        finally:
            for queue in self._queues.values():
                for item in queue:
                    if not item.future.done():
                        item.future.set_exception(WorkerClosed("inference worker stopped"))
            self._queues.clear()
            self._set_pending(0)

    def _take(self) -> list[_Pending]:
        """Up to max_batch live requests, one per session in turn (round-robin)."""
        items: list[_Pending] = []
        while len(items) < self.max_batch and self._queues:
            session, queue = next(iter(self._queues.items()))
            del self._queues[session]
            item = queue.popleft()
            if queue:
                self._queues[session] = queue  # to the back of the line
            self._set_pending(self._pending - 1)
            if not item.future.done():  # skip callers that were cancelled while queued
                items.append(item)
        return items

    async def _run_batch(self, items: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        batches = [item.request.batch for item in items]
        try:
            outputs, ms = await loop.run_in_executor(self._executor, self._infer, batches)
        except asyncio.CancelledError:
            for item in items:
                if not item.future.done():
                    item.future.set_exception(WorkerClosed("inference worker stopped"))
            raise
        except Exception as error:
            if len(items) == 1:
                self.metrics.failed += 1
                log.warning("inference failed for session %s: %r", items[0].request.session, error)
                if not items[0].future.done():
                    items[0].future.set_exception(error)
                return
            for item in items:  # isolate the bad window(s): only they fail
                if not item.future.done():
                    await self._run_batch([item])
            return
        self.metrics.calls += 1
        self.metrics.windows += len(items)
        self.metrics.batch_sizes[len(items)] += 1
        self.metrics.model_ms.append(ms)
        for item, output in zip(items, outputs, strict=True):
            if not item.future.done():
                item.future.set_result(output)

    def _infer(self, batches: list[MultimodalBatch]) -> tuple[list[FusionOutput], float]:
        """Runs in the executor thread: stack, call the model, split back to batch size 1."""
        batch = stack_windows(batches).to(self.device)
        started = time.perf_counter()
        with torch.inference_mode():
            output = self.model(batch, imagine=self.imagine)
            outputs = split_output(output, len(batches))  # .cpu() also waits for CUDA
        return outputs, (time.perf_counter() - started) * 1000

    def _set_pending(self, value: int) -> None:
        self._pending = value
        self.metrics.queue_depth = value
        self.metrics.max_queue_depth = max(self.metrics.max_queue_depth, value)


def _model_device(model: object) -> torch.device:
    if isinstance(model, torch.nn.Module):
        parameter = next(model.parameters(), None)
        if parameter is not None:
            return parameter.device
    return torch.device("cpu")
