"""Late text on spoken MOSI valid: does the evaluator decide well on real engine windows?

The windows are the engine's own (train/spoken.py: MOSI valid transcripts spoken with
espeak-ng, recognised by the streaming ASR inside a real Session). A video's utterances
are played back to back, as one live session would hear them, and every window with
words is made late the way a lagging recogniser makes it: its text is gone, and what the
session can recall is the latest window whose text was ready `lag` seconds before (lag
drawn from LAGS, the engine calls text late when the recogniser is more than half a
4 s window behind). Early in an utterance that recall is the previous utterance's words:
imagining from it can hurt, and the quality signals (its age, whether a pause started a
new utterance since) say when.

The study: the engine checkpoint's backbone stays frozen (it never saw MOSI valid); per
seed, videos are split in two halves, the evaluator and τ are fitted on one half and
judged on the other, then the other way round (2-fold by video). Inside a half the fit's
own folds and standard errors count a video, not an utterance, as one piece of evidence
(`video_key`), as the halves do. `--fit-on` fits instead on another corpus's valid split
spoken the same way (MOSEI's 298 videos against a half's 5) and judges on every MOSI valid
video. `--ship` then fits the evaluator on every video and writes the checkpoint with its
card.
`python -m stream_mmsa.train.late_text --config configs/engine.yaml` writes
docs/ablation-spoken.md, its plot and figures.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from ..config import EngineConfig, load_config
from ..features.text import TextEncoder, encode_records
from ..model.evaluator import Decisions, fit_evaluator, gate_decisions, score_decisions
from ..model.quality import Recall, quality_signals
from ..model.sentiment import SentimentModel, save_sentiment_model
from ..model.types import MODALITIES, QUALITY_SIGNALS
from .ablation import interval_lines, plot_study, summary, table, verdict
from .datasets import Sample, TextRecord, collate, load_label_csv
from .gate_study import METHODS, Judged, auroc, bootstrap, fit_plain, judge, spearman
from .protocols import ModalityPattern
from .readme import write_block
from .spoken import _has_text, _load, config_records, featurize

SEEDS = "1,2,3,4,5"
"""The study's default seeds (each: a lag draw, halves, the evaluator's fit)."""
LAGS = (2.0, 2.5, 3.0, 3.5, 4.0)
"""Recogniser lag (s) behind a window's end when its text is late."""


@dataclass
class LatePair:
    """One window twice: as it was (text ready) and late (text gone, recall instead)."""

    complete: Sample
    late: Sample
    video: str
    utterance: str


def video_key(pairs: Sequence[LatePair]) -> Callable[[str], str]:
    """A window id's video, the evaluator's evidence unit here (`Decisions.groups`). A
    video's utterances share a speaker and a topic, their labels go together, and a
    window's recalled text is often another utterance's words, so folds by utterance would
    leak."""
    videos = {p.utterance: p.video for p in pairs}
    return lambda sample_id: videos[sample_id.split("#", 1)[0]]


def _timeline(records: Sequence[TextRecord], directory: Path) -> dict[str, list[tuple]]:
    """Per video, its utterances back to back: (record, window, global end) in time order."""
    by_video: dict[str, list[TextRecord]] = defaultdict(list)
    for record in records:
        by_video[record.video].append(record)
    out: dict[str, list[tuple]] = {}
    for video, clips in by_video.items():
        clips.sort(key=lambda r: r.order)
        offset, rows = 0.0, []
        for record in clips:
            windows = _load(directory / f"{record.id}.pkl")
            for window in windows:
                rows.append((record, window, offset + window["end"]))
            offset += max((w["end"] for w in windows), default=0.0)
        out[video] = rows
    return out


def late_pairs(
    records: Sequence[TextRecord],
    encoder: TextEncoder,
    engine: EngineConfig,
    seed: int,
) -> list[LatePair]:
    """Every window with words, complete and late (module docstring), vision as in training."""
    directory = featurize(records, engine)
    vision = [w["vision"] for w in _load(directory / "vision.pkl")]
    timeline = _timeline(records, directory)
    texts = sorted(
        {w["transcript"] for rows in timeline.values() for _, w, _ in rows if _has_text(w)}
    )
    states = encode_records([TextRecord(t, t, 0.0) for t in texts], encoder)
    rng = np.random.default_rng(seed)
    pairs = []
    for video, rows in timeline.items():
        spoken = [(r, w, end) for r, w, end in rows if _has_text(w)]
        for record, window, end in spoken:
            lag = float(rng.choice(LAGS))
            earlier = [x for x in spoken if x[2] <= end - lag + 1e-6]
            recall = None
            continues = False  # utterances are 1.5 s apart: a pause the engine calls new
            if earlier:
                r, w, e = earlier[-1]
                recall = Recall(states[w["transcript"]].float().numpy(), e, w["transcript"])
                continues = r.id == record.id
            face = vision[rng.integers(len(vision))]
            shared = {}
            if window["audio"] is not None:
                shared["audio"] = window["audio"]
            if face is not None:
                shared["vision"] = face
            text = states[window["transcript"]].float().numpy()
            sample_id = f"{record.id}#{window['index']}"
            words = len(window["transcript"].split())
            complete = Sample(
                sample_id,
                record.label,
                {**shared, "text": text},
                quality=quality_signals(words, end, None, False),
            )
            late = Sample(
                sample_id,
                record.label,
                shared,
                recalled=None if recall is None else recall.states,
                quality=quality_signals(0, end, recall, continues),
            )
            pairs.append(LatePair(complete, late, video, record.id))
    return pairs


TEACHER = "gate (teacher)"
"""The gate of an evaluator fitted to the complete flow's predictions instead of the labels."""
RULE = "recall rule"
"""A fixed rule for reference, fitted on nothing: imagine late text iff its recall continues
the utterance (no pause that starts a new one since the recalled words)."""
COLUMNS = (*METHODS, TEACHER, RULE)
COMPARE = {"recall rule - fixed": (RULE, "fixed"), "gate - recall rule": ("gate", RULE)}
"""Differences reported beside the study's own (gate_study.bootstrap)."""
SHIP_PATTERNS = ("missing_vision", "missing_audio")
"""What `--ship` also fits on, dropped from the windows: no face, no microphone."""


def score_pairs(
    model: SentimentModel,
    pairs: Sequence[LatePair],
    dims: dict[str, int],
    also: Sequence[str] = (),
) -> Decisions:
    """Every decision scored by the frozen model, in the order of `pairs`; with `also`,
    followed by the complete and the late windows with those patterns applied."""
    batches = []
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for start in range(0, len(pairs), 256):
            chunk = pairs[start : start + 256]
            complete = collate([p.complete for p in chunk], dims)
            late = collate([p.late for p in chunk], dims)
            variants = [late] + [
                ModalityPattern(name).apply(batch, gen)
                for name in also
                for batch in (complete, late)
            ]
            batches += [(model.prepare(complete), model.prepare(v)) for v in variants]
    return score_decisions(model.fusion, batches, model.members)


def _halves(videos: list[str], seed: int) -> tuple[set[str], set[str]]:
    shuffled = sorted(videos)
    random.Random(seed).shuffle(shuffled)
    return set(shuffled[::2]), set(shuffled[1::2])


@contextmanager
def _evaluator_kept(model: SentimentModel) -> Iterator[None]:
    """Studies refit the evaluator and τ; the model leaves them as it came."""
    state = {k: v.clone() for k, v in model.fusion.evaluator.state_dict().items()}
    tau = model.fusion.tau.clone()
    try:
        yield
    finally:
        model.fusion.evaluator.load_state_dict(state)
        model.fusion.tau.copy_(tau)


def _fit_and_judge(
    model: SentimentModel,
    fitted: Decisions,
    held: Decisions,
    evidence: torch.Tensor,
    groups: np.ndarray,
    seed: int,
) -> tuple[Judged, torch.Tensor]:
    """Fit the evaluator (on labels, and on the teacher for `TEACHER`) and plain on
    `fitted`; every column's errors on `held` with the gate's decisions there (`decided`)."""
    fit_evaluator(model.fusion, fitted, seed=seed, groups=evidence)
    plain = fit_plain(fitted, seed)
    judged = judge(model.fusion, held, plain, groups)
    decisions = decided(model, held)
    fit_evaluator(model.fusion, fitted, target="teacher", seed=seed, groups=evidence)
    judged.errors[TEACHER] = held.errors(gate_decisions(model.fusion, held)).numpy()
    judged.errors[RULE] = held.errors(recall_rule(held)).numpy()
    return judged, decisions


def _utterance_groups(pairs: Sequence[LatePair]) -> np.ndarray:
    utterances = {u: i for i, u in enumerate(sorted({p.utterance for p in pairs}))}
    return np.array([utterances[p.utterance] for p in pairs])


def videos_of_groups(pairs: Sequence[LatePair]) -> np.ndarray:
    """The video (an index) of each of `_utterance_groups`' groups, to regroup by video."""
    video = {p.utterance: p.video for p in pairs}
    names = sorted(set(video.values()))
    return np.array([names.index(video[u]) for u in sorted(video)])


def by_video(study: list[dict[str, Judged]], videos: list[np.ndarray]) -> list[dict[str, Judged]]:
    """The study with each seed's windows grouped by video instead of utterance, so that a
    bootstrap draws whole videos: a video's utterances share a speaker and a topic."""
    return [
        {k: replace(j, groups=of_group[j.groups]) for k, j in seed.items()}
        for seed, of_group in zip(study, videos, strict=True)
    ]


def study_seed(
    model: SentimentModel, pairs: list[LatePair], dims: dict[str, int], seed: int
) -> tuple[Judged, torch.Tensor]:
    """2-fold by video: fit on one half, judge on the other; both held-out halves joined,
    with their decisions (`decided`)."""
    data = score_pairs(model, pairs, dims)
    videos = np.array([p.video for p in pairs])
    by_video = video_key(pairs)
    groups = _utterance_groups(pairs)
    parts: list[tuple[Judged, torch.Tensor]] = []
    one, other = _halves(sorted(set(videos)), seed)
    with _evaluator_kept(model):
        for a, b in ((one, other), (other, one)):
            fitted = data.rows(torch.from_numpy(np.isin(videos, list(a))))
            test_rows = np.isin(videos, list(b))
            held = data.rows(torch.from_numpy(test_rows))
            evidence = fitted.groups(by_video)
            parts.append(_fit_and_judge(model, fitted, held, evidence, groups[test_rows], seed))
    judged = [j for j, _ in parts]
    joined = Judged(
        {k: np.concatenate([j.errors[k] for j in judged]) for k in COLUMNS},
        np.concatenate([j.groups for j in judged]),
        np.concatenate([j.predicted for j in judged]),
        np.concatenate([j.realised for j in judged]),
        statistics.fmean(j.imagine_rate for j in judged),
    )
    return joined, torch.cat([d for _, d in parts])


def study_across(
    model: SentimentModel,
    fit_pairs: list[LatePair],
    pairs: list[LatePair],
    dims: dict[str, int],
    seed: int,
) -> tuple[Judged, torch.Tensor]:
    """Fit on another corpus's windows (`fit_pairs`, every video), judge on all of `pairs`:
    many more videos to fit on, and every judged video held out."""
    fitted = score_pairs(model, fit_pairs, dims)
    held = score_pairs(model, pairs, dims)
    evidence = fitted.groups(video_key(fit_pairs))
    with _evaluator_kept(model):
        return _fit_and_judge(model, fitted, held, evidence, _utterance_groups(pairs), seed)


def recall_rule(data: Decisions) -> torch.Tensor:
    """(N, 3) bool: `RULE`'s decisions (late text imagined iff its recall continues)."""
    continues = data.inputs.quality[:, QUALITY_SIGNALS.index("recall_continues")] > 0.5
    return data.missing & continues[:, None] & torch.tensor([True, False, False])


def decided(model: SentimentModel, data: Decisions) -> torch.Tensor:
    """(N, 3) per window: the gate imagines the text (0/1), the recall continues the
    utterance (0/1), and the realised gain of imagining it (MAE skipping − imagining)."""
    gate = gate_decisions(model.fusion, data)
    gain = data.errors(torch.zeros_like(gate)) - data.errors(
        data.missing & torch.tensor([True, False, False])
    )
    continues = data.inputs.quality[:, QUALITY_SIGNALS.index("recall_continues")] > 0.5
    return torch.stack([gate[:, 0].float(), continues.float(), gain], 1)


def decision_profile(rows: torch.Tensor) -> dict[str, float | None]:
    """Imagine rate of late text with and without a recall that continues the utterance,
    and the realised gain when the gate imagines or skips, over held-out windows (None:
    no such window)."""
    text, continues, gain = rows[:, 0] > 0.5, rows[:, 1] > 0.5, rows[:, 2]

    def mean(x: torch.Tensor) -> float | None:
        return float(x.float().mean()) if len(x) else None

    return {
        "imagine_rate_recall_continues": mean(text[continues]),
        "imagine_rate_recall_older_utterance": mean(text[~continues]),
        "gain_when_imagined": mean(gain[text]),
        "gain_when_skipped": mean(gain[~text]),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/engine.yaml"))
    parser.add_argument("--checkpoint", type=Path, help="default: the engine's")
    parser.add_argument("--seeds", default=SEEDS)
    parser.add_argument(
        "--out",
        type=Path,
        help="the report (and its .json, .png beside it); default docs/ablation-spoken.md, "
        "with --fit-on docs/ablation-spoken-across.md",
    )
    parser.add_argument(
        "--fit-on",
        type=Path,
        help="a label.csv whose valid split, spoken, fits the evaluator (every video); "
        "judged on all of the config's valid split instead of 2-fold by video",
    )
    parser.add_argument(
        "--ship",
        type=Path,
        help="then fit on every video (of --fit-on if given) and write the checkpoint here",
    )
    args = parser.parse_args(argv)
    args.out = args.out or _default_out(args)
    from .run import load_for_eval

    console = Console()
    config = load_config(args.config)
    torch.set_num_threads(config.train.threads)
    checkpoint = args.checkpoint or EngineConfig().checkpoint
    model, extra, encoder = load_for_eval(checkpoint)
    dims = dict(model.fusion.config.input_dims)
    (records,) = config_records(config, "valid")
    seeds = [int(s) for s in args.seeds.split(",")]
    fit_records = load_label_csv(args.fit_on, "valid") if args.fit_on else []
    study, profiles, videos = [], [], []
    for seed in seeds:
        pairs = late_pairs(records, encoder, config.engine, seed)
        videos.append(videos_of_groups(pairs))
        if fit_records:
            fit_pairs = late_pairs(fit_records, encoder, config.engine, seed)
            judged, rows = study_across(model, fit_pairs, pairs, dims, seed)
        else:
            judged, rows = study_seed(model, pairs, dims, seed)
        study.append({"late text": judged})
        profiles.append(rows)
        profile = decision_profile(rows)
        console.print(f"seed {seed}: {len(pairs)} late windows, " + json.dumps(profile))
    intervals = bootstrap(study, shared=True, also=COMPARE)
    grouped = by_video(study, videos)
    video_intervals = bootstrap(grouped, shared=True)
    video_intervals["videos"] = {"count": len(np.unique(grouped[0]["late text"].groups))}
    ranking = {
        "auroc": statistics.fmean(
            auroc(s["late text"].predicted, s["late text"].realised > 0) for s in study
        ),
        "spearman": statistics.fmean(
            spearman(s["late text"].predicted, s["late text"].realised) for s in study
        ),
    }
    profile = decision_profile(torch.cat(profiles))
    report = _report(study, intervals, video_intervals, ranking, profile, args, checkpoint)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    figures = {"intervals": intervals, "intervals_by_video": video_intervals}
    figures |= {"ranking": ranking, "decisions": profile}
    args.out.with_suffix(".json").write_text(json.dumps(figures, indent=2) + "\n")
    block = "ablation-spoken-across" if args.fit_on else "ablation-spoken"
    if args.checkpoint is None:  # the engine's own model: the README's figures
        write_block(Path("README.md"), block, summary(figures, _command(args), args.out))
    title = f"late text, spoken MOSI valid ({_judged(args)})"
    plot_study(study, args.out.with_suffix(".png"), title, COLUMNS)
    print(report)
    if args.ship:
        pairs = late_pairs(fit_records or records, encoder, config.engine, seeds[0])
        scored = score_pairs(model, pairs, dims, SHIP_PATTERNS)
        fit = fit_evaluator(
            model.fusion, scored, seed=seeds[0], groups=scored.groups(video_key(pairs))
        )
        card = _card(extra["model_card"], fit, profile, intervals, args)
        extra = {**extra, "model_card": card}
        save_sentiment_model(args.ship, model, extra)
        args.ship.with_suffix(".md").write_text(card)
        console.print(f"wrote {args.ship}")


def realised_gains(profile: dict[str, float | None]) -> str:
    """The realised gain (MAE) when the gate imagined and when it skipped, or that it never did."""
    parts = []
    for action in ("imagined", "skipped"):
        value = profile[f"gain_when_{action}"]
        parts.append(f"none {action}" if value is None else f"when {action} {value:+.3f} MAE")
    return f"realised gain {', '.join(parts)}"


def _report(study, intervals, video_intervals, ranking, profile, args, checkpoint: Path) -> str:
    corpora = f"MOSI and {_fitted_corpus(args)}" if args.fit_on else "MOSI"
    lines = [
        "# Late text on spoken MOSI valid: the evaluator on real engine windows",
        "",
        f"Made by `{_command(args)}` with the frozen backbone of "
        f"`{checkpoint.name}`. Windows: the engine's own on {corpora} valid transcripts "
        "spoken by espeak-ng (train/spoken.py), a video's utterances back to back; each "
        "window with words made late with a recogniser "
        f"lag drawn from {', '.join(map(str, LAGS))} s, recalling the latest text ready by "
        f"then (train/late_text.py). {_protocol(args)} Mean |error| per window, lower is "
        "better; the lag draw is simulated, the text, audio and recognition errors are real. "
        f"`{TEACHER}`: the same evaluator fitted to the complete flow's predictions (the "
        "window with its text ready) as pseudo labels instead of the labels. "
        f"`{RULE}`: a fixed rule for reference, fitted on nothing: imagine late text iff the "
        "recall continues the utterance (the `recall_continues` quality signal).",
        "",
        *table(study, COLUMNS),
        "",
        "Paired bootstrap over utterances (2000 draws; the seeds hold the same utterances, so "
        "each draw picks one set of utterances for all of them):",
        "",
        *interval_lines(intervals),
        "",
        verdict(intervals),
        "",
        _video_line(video_intervals),
        "",
        _power(intervals, len(np.unique(np.concatenate([s["late text"].groups for s in study])))),
        "",
        f"Evaluator score vs realised gain of imagining the text: AUROC {ranking['auroc']:.3f}, "
        f"Spearman {ranking['spearman']:.3f}. Late text is imagined (from the recall) in "
        f"{100 * profile['imagine_rate_recall_continues']:.0f} % of windows whose recall "
        "continues the utterance and "
        f"{100 * profile['imagine_rate_recall_older_utterance']:.0f} % of the others; "
        f"{realised_gains(profile)}.",
        "",
        f"![mean |error| per method]({args.out.with_suffix('.png').name})",
    ]
    return "\n".join(lines) + "\n"


def _video_line(intervals: dict) -> str:
    """The main differences bootstrapped over whole videos (the honest unit, and few)."""
    count = intervals["videos"]["count"]
    names = ("gate - fixed", "gate - plain")
    parts = [
        f"{name} {intervals[name]['difference']:+.4f} "
        f"[{intervals[name]['ci95_low']:+.4f}, {intervals[name]['ci95_high']:+.4f}]"
        for name in names
    ]
    return (
        f"The same bootstrap over videos instead, drawing whole videos ({count} of them: "
        "utterances of one video share a speaker and a topic, so intervals over utterances "
        "can be too narrow; with this few videos a percentile interval is itself rough): "
        + "; ".join(parts)
        + "."
    )


def _default_out(args) -> Path:
    """Each protocol's own report: a run across corpora never overwrites the 2-fold one."""
    return Path("docs/ablation-spoken-across.md" if args.fit_on else "docs/ablation-spoken.md")


def _command(args) -> str:
    """The study's command line, as its report and the README name it."""
    command = f"python -m stream_mmsa.train.late_text --config {args.config.as_posix()}"
    if args.seeds != SEEDS:
        command += f" --seeds {args.seeds}"
    if args.fit_on:
        command += f" --fit-on {args.fit_on.as_posix()}"
    if args.out != _default_out(args):
        command += f" --out {args.out.as_posix()}"
    return command


def _fitted_corpus(args) -> str:
    """The corpus the evaluator is fitted on ("MOSEI" for --fit-on its label.csv)."""
    return args.fit_on.parent.name.upper() if args.fit_on else "MOSI"


def _judged(args) -> str:
    """How MOSI valid is held out from the fit."""
    return f"fitted on {_fitted_corpus(args)}" if args.fit_on else "held-out halves"


def _protocol(args) -> str:
    """How the evaluator was fitted and judged, for the report."""
    across = (
        f"the evaluator and τ are fitted on every video of `{args.fit_on.as_posix()}`'s valid "
        "split, spoken and made late the same way, and judged on every MOSI valid video"
        if args.fit_on
        else "2-fold by video: the evaluator and τ are fitted on one half and judged on the "
        "other, both ways"
    )
    return (
        f"Per seed, {across}; in a fit, the evaluator's folds and the threshold search's "
        "standard errors count a video as one piece of evidence."
    )


def _power(intervals: dict, utterances: int) -> str:
    """What the reference rule says about how large a gain this many utterances can show."""
    rule = intervals["recall rule - fixed"]
    gate = intervals["gate - recall rule"]
    return (
        f"For scale: the fixed recall rule, fitted on nothing, is {rule['difference']:+.3f} "
        f"from the better fixed policy ([{rule['ci95_low']:+.3f}, {rule['ci95_high']:+.3f}]), "
        f"and the gate {gate['difference']:+.3f} from the rule ([{gate['ci95_low']:+.3f}, "
        f"{gate['ci95_high']:+.3f}]). The interval's width comes from the utterances: MOSI "
        f"valid has {utterances} utterances with words, and whether imagining from the recall "
        "helps a window depends mostly on its utterance's label."
    )


def _card(card: str, fit, profile, intervals, args) -> str:
    """The checkpoint's card with its evaluator section replaced by what was fitted now."""
    kept = []
    skipping = False
    for line in card.splitlines():
        if line.startswith(("- Evaluator", "- Decisions", "- Reliance")):
            skipping = True
            continue
        if skipping and line.startswith("  "):
            continue
        skipping = False
        kept.append(line)
    gate = intervals["gate - fixed"]
    older = 100 * profile["imagine_rate_recall_older_utterance"]
    tau = torch.tensor(fit.calibration.tau)
    rules = []
    for j, modality in enumerate(MODALITIES):
        per = []
        for pattern in range(1, 8):
            if pattern >> j & 1 or pattern not in fit.calibration.per_pattern:
                continue
            present = "+".join(m for k, m in enumerate(MODALITIES) if pattern >> k & 1)
            t = float(tau[pattern, j])
            rule = "never" if t == math.inf else "always" if t == -math.inf else f"score > {t:.2f}"
            per.append(f"{present} {rule}")
        if per:
            rules.append(f"  {modality} missing, imagined when: " + "; ".join(per) + ".")
    rules.append(
        "  Every other case (no late-text window had it): never imagined, the gate closed."
    )
    kept += [
        "- Evaluator (evaluate, then generate): fitted on a frozen backbone by "
        f"`python -m stream_mmsa.train.late_text --ship` on {fit.samples} windows of spoken",
        f"  {_fitted_corpus(args)} valid (every video; text late, and the windows with the "
        "face or the microphone",
        "  removed, text late or not; expected error of the gated mixture "
        f"{fit.expected_error_start:.3f} → {fit.expected_error_end:.3f}). Imagined late text is",
        "  the session's recalled text; rules it settled on:",
        *rules,
        f"- Decisions on spoken MOSI valid, {_judged(args)} ({args.out.as_posix()}): late text",
        f"  imagined in {100 * profile['imagine_rate_recall_continues']:.0f} % of windows whose "
        f"recall continues the utterance, {older:.0f} % of the others;",
        f"  {realised_gains(profile)}; gate − better fixed policy "
        f"{gate['difference']:+.3f} [{gate['ci95_low']:+.3f}, {gate['ci95_high']:+.3f}].",
    ]
    return "\n".join(kept) + "\n"


if __name__ == "__main__":
    main()
