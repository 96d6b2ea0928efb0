"""The shared inference worker: micro-batching across sessions, isolation, overload."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch
from torch import nn

from stream_mmsa.inference import (
    InferenceRequest,
    InferenceWorker,
    WorkerClosed,
    WorkerOverloaded,
    stack_windows,
)
from stream_mmsa.model.types import MODALITIES, FusionOutput, MultimodalBatch

DIMS = {"text": 6, "audio": 4, "vision": 5}


class TinyFusion(nn.Module):
    """A small real model with the FusionModel signature; masked, so padding must not matter."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoders = nn.ModuleDict({m: nn.Linear(d, 8) for m, d in DIMS.items()})
        self.head = nn.Linear(24, 1)
        self.calls: list[int] = []

    def forward(self, batch: MultimodalBatch, imagine: str = "gate") -> FusionOutput:
        self.calls.append(batch.batch_size)
        pooled = []
        for i, m in enumerate(MODALITIES):
            h = torch.tanh(self.encoders[m](batch.features[m]))  # padding would leak via bias
            mask = batch.masks[m].unsqueeze(-1).float()
            mean = (h * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            pooled.append(mean * batch.present[:, i : i + 1])
        z = torch.cat(pooled, dim=-1)
        score = 3 * torch.tanh(self.head(z)).squeeze(-1)
        norms = torch.stack([p.norm(dim=-1) for p in pooled], dim=-1)
        weights = norms / norms.sum(-1, keepdim=True).clamp(min=1e-6)
        gain = torch.where(batch.present, 0.0, 0.1 * score.unsqueeze(-1).detach())
        return FusionOutput(
            score=score,
            confidence=torch.sigmoid(score.abs()),
            weights=weights,
            gain=gain,
            imagined=(gain > 0) & (imagine != "never"),
        )


class GatedFusion(TinyFusion):
    """Holds each call until `release` is set, to fill the queue deterministically."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def forward(self, batch: MultimodalBatch, imagine: str = "gate") -> FusionOutput:
        self.entered.set()
        assert self.release.wait(10)
        return super().forward(batch, imagine)


def window(seed: int, lengths: tuple[int, int, int] = (3, 5, 7), dims=DIMS) -> MultimodalBatch:
    g = torch.Generator().manual_seed(seed)
    features, masks = {}, {}
    for m, t in zip(MODALITIES, lengths, strict=True):
        features[m] = torch.randn(1, t, dims[m], generator=g)
        masks[m] = torch.ones(1, t, dtype=torch.bool)
    masks["audio"][0, -1] = False  # a dropped element inside the window
    present = torch.tensor([[seed % 3 != 0, True, seed % 2 == 0]])
    return MultimodalBatch(features, masks, present, ids=[f"w{seed}"])


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_stack_windows_pads_and_masks() -> None:
    a, b = window(1, (2, 5, 1)), window(2, (4, 1, 3))
    stacked = stack_windows([a, b])
    assert stacked.batch_size == 2 and stacked.ids == ["w1", "w2"]
    assert stacked.features["text"].shape == (2, 4, 6)
    assert stacked.masks["text"].tolist() == [[True, True, False, False], [True] * 4]
    assert torch.equal(stacked.features["text"][0, :2], a.features["text"][0])
    assert not stacked.features["text"][0, 2:].any()
    assert stacked.masks["audio"][0].tolist() == a.masks["audio"][0].tolist()
    assert torch.equal(stacked.present, torch.cat([a.present, b.present]))
    with pytest.raises(ValueError, match="feature sizes"):
        stack_windows([a, window(3, dims={**DIMS, "audio": 9})])


def test_concurrent_sessions_are_batched_and_match_unbatched_outputs() -> None:
    model = TinyFusion()
    windows = {
        (s, k): window(10 * s + k, (1 + k, 2 + s, 3 + k + s)) for s in range(3) for k in range(4)
    }
    with torch.inference_mode():
        expected = {key: model(batch) for key, batch in windows.items()}
    model.calls.clear()

    async def main():
        async with InferenceWorker(model, max_wait_ms=50, max_batch=32) as worker:

            async def session(s: int) -> list[FusionOutput]:
                return await asyncio.gather(
                    *(worker.submit(InferenceRequest(f"s{s}", windows[s, k])) for k in range(4))
                )

            results = await asyncio.gather(*(session(s) for s in range(3)))
            return results, worker.metrics.summary()

    results, metrics = run(main())
    assert len(model.calls) < 12 and sum(model.calls) == 12
    assert metrics["windows"] == 12 and metrics["calls"] == len(model.calls)
    assert sum(metrics["batch_sizes"].values()) == len(model.calls)
    assert metrics["model_ms_p50"] is not None
    for s in range(3):
        for k in range(4):
            got, want = results[s][k], expected[s, k]
            assert got.score.shape == (1,)
            for name in ("score", "confidence", "weights", "gain"):
                torch.testing.assert_close(
                    getattr(got, name), getattr(want, name), atol=1e-5, rtol=0
                )
            assert torch.equal(got.imagined, want.imagined)


def test_round_robin_across_sessions_under_load() -> None:
    model = GatedFusion()

    async def main():
        async with InferenceWorker(model, max_batch=2, max_wait_ms=0) as worker:
            first = asyncio.create_task(worker.submit(InferenceRequest("busy", window(0))))
            await asyncio.to_thread(model.entered.wait, 5)  # the worker is busy with it
            busy = [
                asyncio.create_task(worker.submit(InferenceRequest("busy", window(i))))
                for i in range(1, 4)
            ]
            await asyncio.sleep(0)
            quiet = asyncio.create_task(worker.submit(InferenceRequest("quiet", window(9))))
            await asyncio.sleep(0)
            model.release.set()
            await asyncio.gather(first, *busy, quiet)
        return model.calls

    calls = run(main())
    # The quiet session's window rides in the very next batch, ahead of busy's backlog.
    assert calls[:2] == [1, 2]


def test_overload_is_rejected_not_queued() -> None:
    model = GatedFusion()

    async def main():
        async with InferenceWorker(model, max_queue=4, max_per_session=2) as worker:
            try:
                first = asyncio.create_task(worker.submit(InferenceRequest("a", window(0))))
                await asyncio.to_thread(model.entered.wait, 5)  # taken: no longer queued
                queued = [
                    asyncio.create_task(worker.submit(InferenceRequest(s, window(i))))
                    for i, s in enumerate(["a", "a", "b"])
                ]
                await asyncio.sleep(0)
                with pytest.raises(WorkerOverloaded, match="session 'a'"):
                    await worker.submit(InferenceRequest("a", window(5)))
                queued.append(asyncio.create_task(worker.submit(InferenceRequest("c", window(6)))))
                await asyncio.sleep(0)
                with pytest.raises(WorkerOverloaded, match="queue full"):
                    await worker.submit(InferenceRequest("d", window(7)))
                assert worker.metrics.queue_depth == 4 and worker.metrics.rejected == 2
            finally:
                model.release.set()
            results = await asyncio.gather(first, *queued)
        with pytest.raises(WorkerClosed):
            await worker.submit(InferenceRequest("a", window(8)))
        return results

    assert len(run(main())) == 5


def test_a_failing_request_fails_only_itself() -> None:
    model = TinyFusion()
    bad = window(1, dims={**DIMS, "vision": 3})  # wrong feature size for the model

    async def main():
        async with InferenceWorker(model, max_wait_ms=50) as worker:
            return await asyncio.gather(
                worker.submit(InferenceRequest("a", window(0))),
                worker.submit(InferenceRequest("b", bad)),
                worker.submit(InferenceRequest("c", window(2))),
                return_exceptions=True,
            ), worker.metrics

    (ok_a, error, ok_c), metrics = run(main())
    assert isinstance(error, ValueError | RuntimeError)
    assert isinstance(ok_a, FusionOutput) and isinstance(ok_c, FusionOutput)
    assert metrics.failed == 1


def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    model = GatedFusion()

    async def main():
        async with InferenceWorker(model, max_wait_ms=0) as worker:
            first = asyncio.create_task(worker.submit(InferenceRequest("a", window(0))))
            await asyncio.to_thread(model.entered.wait, 5)
            doomed = asyncio.create_task(worker.submit(InferenceRequest("b", window(1))))
            kept = asyncio.create_task(worker.submit(InferenceRequest("c", window(2))))
            await asyncio.sleep(0)
            doomed.cancel()
            model.release.set()
            results = await asyncio.gather(first, kept)
            assert doomed.cancelled()
            return results, model.calls

    results, calls = run(main())
    assert all(isinstance(r, FusionOutput) for r in results)
    assert calls == [1, 1]  # the cancelled window never reached the model


def test_submit_takes_one_window() -> None:
    async def main():
        async with InferenceWorker(TinyFusion()) as worker:
            await worker.submit(InferenceRequest("a", stack_windows([window(0), window(1)])))

    with pytest.raises(ValueError, match="one window"):
        run(main())


@pytest.mark.slow
def test_text_worker_batches_sessions_and_gives_each_its_own_states() -> None:
    """Real MiniLM: transcripts from four sessions at once share calls, and each gets the
    states it would get alone (padding masked out)."""
    from stream_mmsa.features.text import TextEncoder
    from stream_mmsa.inference import TextWorker

    encoder = TextEncoder(trainable_top_layers=2, max_tokens=32)
    texts = ["I loved it", "the plot was stupid and far too long", "okay", "what a waste"]

    async def run() -> tuple[list, dict]:
        async with TextWorker(encoder, max_wait_ms=50, cache=2) as worker:
            states = await asyncio.gather(*(worker.encode(f"s{i}", t) for i, t in enumerate(texts)))
            again = await worker.encode("s9", texts[-1])  # the latest two are kept
            assert again is states[-1] and worker.hits == 1
            await worker.encode("s9", texts[0])  # evicted: encoded anew
            assert worker.hits == 1 and worker.metrics.calls == 2
            return states, worker.metrics.summary()

    batched, metrics = asyncio.run(run())
    assert metrics["batch_sizes"] == {4: 1, 1: 1}
    for text, states in zip(texts, batched, strict=True):
        alone, mask = encoder.encode_bottom([text])
        expected = alone[0][mask[0]].numpy()
        assert states.shape == expected.shape and states.shape[1] == 384
        assert float(abs(states - expected).max()) < 1e-4
