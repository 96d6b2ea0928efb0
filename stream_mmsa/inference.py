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
from abc import ABC, abstractmethod
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, Self, TypeVar

import numpy as np
import torch
from torch import Tensor

from .model.types import FusionOutput, MultimodalBatch

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


class WorkerOverloaded(RuntimeError):
    """The worker's queue (or one session's share of it) is full; the window was not queued."""


class WorkerClosed(RuntimeError):
    """The worker is closing or closed and takes no more windows."""


class FusionModelLike(Protocol):
    """What the worker needs from a model: FusionModel and test modules both fit."""

    def __call__(self, batch: MultimodalBatch, *, imagine: str) -> FusionOutput: ...


class TextBottom(Protocol):
    """What the text worker needs: TextEncoder's frozen bottom (features/text.py)."""

    def encode_bottom(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]: ...


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
class _Pending(Generic[In, Out]):
    session: str
    item: In
    future: asyncio.Future[Out]
    enqueued: float


class MicroBatcher(ABC, Generic[In, Out]):
    """Micro-batches work from all sessions into calls of `_infer`; see the module docstring.

    The shared part of the fusion worker and the text worker: the wait-or-fill policy,
    round-robin fairness, bounded queues, failure isolation (when a batched call raises,
    its items are retried one by one, so only a bad one fails its caller).
    """

    def __init__(
        self,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 3.0,
        max_queue: int = 256,
        max_per_session: int = 8,
        name: str = "stream-mmsa-infer",
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_per_session < 1:
            raise ValueError("max_batch, max_queue and max_per_session must be >= 1")
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.max_per_session = max_per_session
        self.name = name
        self.metrics = InferenceMetrics()
        self._queues: dict[str, deque[_Pending[In, Out]]] = {}
        self._pending = 0
        self._arrived = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    @abstractmethod
    def _infer(self, items: list[In]) -> tuple[list[Out], float]:
        """Runs in the executor thread: one output per item, and the call's milliseconds."""

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start the batching task on the running loop (submit also starts it)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def _submit(self, session: str, item: In) -> Out:
        if self._closing or (self._task is not None and self._task.done()):
            raise WorkerClosed(f"{self.name} is closed")
        queue = self._queues.get(session)
        if self._pending >= self.max_queue:
            self.metrics.rejected += 1
            raise WorkerOverloaded(f"{self.name}: queue full ({self.max_queue} pending)")
        if queue is not None and len(queue) >= self.max_per_session:
            self.metrics.rejected += 1
            raise WorkerOverloaded(
                f"{self.name}: session {session!r} has {len(queue)} pending "
                f"(limit {self.max_per_session})"
            )
        self.start()
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(session, deque()).append(
            _Pending(session, item, future, time.monotonic())
        )
        self._set_pending(self._pending + 1)
        self._arrived.set()
        return await future

    async def close(self) -> None:
        """Stop taking work, finish what is queued, release the executor thread."""
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
                for pending in queue:
                    if not pending.future.done():
                        pending.future.set_exception(WorkerClosed(f"{self.name} stopped"))
            self._queues.clear()
            self._set_pending(0)

    def _take(self) -> list[_Pending[In, Out]]:
        """Up to max_batch live requests, one per session in turn (round-robin)."""
        items: list[_Pending[In, Out]] = []
        while len(items) < self.max_batch and self._queues:
            session, queue = next(iter(self._queues.items()))
            del self._queues[session]
            pending = queue.popleft()
            if queue:
                self._queues[session] = queue  # to the back of the line
            self._set_pending(self._pending - 1)
            if not pending.future.done():  # skip callers that were cancelled while queued
                items.append(pending)
        return items

    async def _run_batch(self, items: list[_Pending[In, Out]]) -> None:
        loop = asyncio.get_running_loop()
        work = [pending.item for pending in items]
        try:
            outputs, ms = await loop.run_in_executor(self._executor, self._infer, work)
        except asyncio.CancelledError:
            for pending in items:
                if not pending.future.done():
                    pending.future.set_exception(WorkerClosed(f"{self.name} stopped"))
            raise
        except Exception as error:
            if len(items) == 1:
                self.metrics.failed += 1
                log.warning("%s failed for session %s: %r", self.name, items[0].session, error)
                if not items[0].future.done():
                    items[0].future.set_exception(error)
                return
            for pending in items:  # isolate the bad item(s): only they fail
                if not pending.future.done():
                    await self._run_batch([pending])
            return
        self.metrics.calls += 1
        self.metrics.windows += len(items)
        self.metrics.batch_sizes[len(items)] += 1
        self.metrics.model_ms.append(ms)
        for pending, output in zip(items, outputs, strict=True):
            if not pending.future.done():
                pending.future.set_result(output)

    def _set_pending(self, value: int) -> None:
        self._pending = value
        self.metrics.queue_depth = value
        self.metrics.max_queue_depth = max(self.metrics.max_queue_depth, value)


class InferenceWorker(MicroBatcher[MultimodalBatch, FusionOutput]):
    """The fusion model over windows from every session, batched.

    An nn.Module model is put in eval mode: serving must be deterministic. Results come
    back on the CPU with batch size 1.
    """

    def __init__(
        self,
        model: FusionModelLike,
        *,
        imagine: str = "gate",
        device: torch.device | str | None = None,
        **batching: Any,
    ) -> None:
        super().__init__(name="stream-mmsa-infer", **batching)
        if isinstance(model, torch.nn.Module):
            model.eval()
        self.model = model
        self.imagine = imagine
        self.device = torch.device(device) if device is not None else _model_device(model)

    async def submit(self, request: InferenceRequest) -> FusionOutput:
        """Run one window through the model; raises WorkerOverloaded when the queue is full."""
        if request.batch.batch_size != 1:
            size = request.batch.batch_size
            raise ValueError(f"submit one window at a time (got batch size {size})")
        return await self._submit(request.session, request.batch)

    def _infer(self, batches: list[MultimodalBatch]) -> tuple[list[FusionOutput], float]:
        """Stack, call the model, split back to batch size 1."""
        batch = stack_windows(batches).to(self.device)
        started = time.perf_counter()
        with torch.inference_mode():
            output = self.model(batch, imagine=self.imagine)
            outputs = split_output(output, len(batches))  # .cpu() also waits for CUDA
        return outputs, (time.perf_counter() - started) * 1000


class TextWorker(MicroBatcher[str, np.ndarray]):
    """The text encoder's frozen bottom over window transcripts from every session, batched.

    Capped small: texts in one call are padded to the longest, and on CPU MiniLM gains
    about a fifth per text at batch 4 while padding eats the gain of larger mixed batches.
    Recent results are kept: at a 0.5 s hop most windows repeat the one before's text (the
    recogniser adds words about once a second), and the encoder was a session's largest
    cost after the recogniser. The states are shared, not copied: nothing writes to them.
    """

    def __init__(self, encoder: TextBottom, *, cache: int = 512, **batching: Any) -> None:
        batching.setdefault("max_batch", 4)
        super().__init__(name="stream-mmsa-text", **batching)
        self.encoder = encoder
        self.cache_size = cache
        self.hits = 0
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    async def encode(self, session: str, text: str) -> np.ndarray:
        """Token states (T, H) of one transcript; raises WorkerOverloaded when full."""
        states = self._cache.get(text)
        if states is not None:
            self._cache.move_to_end(text)
            self.hits += 1
            return states
        states = await self._submit(session, text)
        self._cache[text] = states
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return states

    def _infer(self, texts: list[str]) -> tuple[list[np.ndarray], float]:
        started = time.perf_counter()
        with torch.inference_mode():
            states, mask = self.encoder.encode_bottom(texts)
            states, mask = states.cpu(), mask.cpu()
        outputs = [states[i][mask[i]].numpy() for i in range(len(texts))]
        return outputs, (time.perf_counter() - started) * 1000


def _model_device(model: object) -> torch.device:
    if isinstance(model, torch.nn.Module):
        parameter = next(model.parameters(), None)
        if parameter is not None:
            return parameter.device
    return torch.device("cpu")
