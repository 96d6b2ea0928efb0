"""K-fold by video: folds never split a video, each fold's model never sees its clips."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from stream_mmsa.config import load_config
from stream_mmsa.model.sentiment import load_sentiment_model
from stream_mmsa.train.datasets import TextRecord
from stream_mmsa.train.ensemble import main as ship
from stream_mmsa.train.kfold import (
    load_folds,
    main,
    paired_difference,
    run_fold,
    summary,
    video_folds,
    video_of,
)

WORDS = {1.0: "a wonderful film, I loved it", -1.0: "a dreadful film, I hated it"}


def _records(videos: int, clips: int) -> list[TextRecord]:
    return [
        TextRecord(f"vid_{v}_{c}", "words", 1.0)
        for v in range(videos)
        for c in range(1 + clips * (v % 3))
    ]


def test_folds_deal_whole_videos_in_balanced_groups() -> None:
    records = _records(videos=23, clips=4)
    folds = video_folds(records, 5, seed=3)
    assert video_of(records[0]) == "vid_0"
    assert video_of(TextRecord("-3g5yACwYnA_82_7645", "words", 1.0, "-3g5yACwYnA")) == (
        "-3g5yACwYnA"  # a MOSEI clip: its id's last underscore is not the video's end
    )
    assert sorted(v for fold in folds for v in fold) == sorted({video_of(r) for r in records})
    sizes = [sum(video_of(r) in fold for r in records) for fold in folds]
    assert max(sizes) - min(sizes) <= 9  # at most the largest video's clips apart
    assert video_folds(records, 5, seed=3) == folds  # seeded


def _label_csv(path: Path, prefix: str, videos: int) -> Path:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["video_id", "clip_id", "text", "label", "mode", "start", "end"])
        for v in range(videos):
            mode = "valid" if v % 4 == 0 else "train"
            for c in range(3):
                label = 1.0 if (v + c) % 2 else -1.0
                out.writerow([f"{prefix}_{v}", c, WORDS[label], 2 * label, mode, 0, 1])
    return path


@pytest.mark.slow
def test_a_fold_scores_only_its_held_out_videos(tmp_path: Path) -> None:
    mosi = _label_csv(tmp_path / "mosi.csv", "m", videos=8)
    mosei = _label_csv(tmp_path / "mosei.csv", "e", videos=8)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "name: tiny\nseed: 1\ndata:\n  kind: label_csv\n"
        f"  train_paths: [{mosi}, {mosei}]\n  train_repeats: [2, 1]\n  valid_path: {mosi}\n"
        "model:\n  input_dims: {text: 384, audio: 4, vision: 4}\n"
        "train:\n  epochs: 2\n  batch_size: 8\n  threads: 1\n"
    )
    result = run_fold(load_config(config), fold=1, folds=2)
    assert result["ids"] and all(i.rsplit("_", 1)[0] in result["videos"] for i in result["ids"])
    assert len(result["pred"]) == len(result["label"]) == len(result["ids"]) == 12
    assert (
        sum(result["was_valid"]) == sum(int(v.split("_")[1]) % 4 == 0 for v in result["videos"]) * 3
    )

    out = tmp_path / "runs"
    (out / "tiny").mkdir(parents=True)
    (out / "tiny" / "fold1-of-2.json").write_text(json.dumps(result))
    with pytest.raises(SystemExit):  # fold 0 not run yet
        main(["--config", str(config), "--folds", "2", "--out", str(out), "--readme"])
    with pytest.raises(SystemExit):  # no fold 2 of 2: refused before any training
        main(["--config", str(config), "--folds", "2", "--fold", "2", "--out", str(out)])
    (out / "tiny" / "fold0-of-2.json").write_text(json.dumps({**result, "fold": 0}))
    ensemble = load_folds(out, "tiny+tiny", 2)
    assert ensemble[1]["pred"] == pytest.approx(result["pred"])  # the mean of equal runs
    table = summary(ensemble, "kfold --readme", "tiny")
    assert "| fold 0 | 12 |" in table and "| fold 1 | 12 |" in table
    assert "| pooled out-of-fold (95 % CI over videos) | 24 |" in table
    same = paired_difference(ensemble, load_folds(out, "tiny", 2), resamples=50)
    assert same["MAE"] == pytest.approx((0.0, 0.0, 0.0), abs=1e-6)

    # The recipe shipped: every clip in training, the seeds averaged, the card citing the
    # out-of-fold figures saved above.
    ckpt = tmp_path / "ship.pt"
    args = ["--config", str(config), "--seeds", "1,2", "--out", str(ckpt), "--folds", "2"]
    ship([*args, "--kfold-out", str(out), "--kfold-tag", "tiny+tiny"])
    model, extra = load_sentiment_model(ckpt)
    assert len(model.fusions) == 2 and extra["seeds"] == [1, 2]
    card = ckpt.with_suffix(".md").read_text()
    assert "seed ensemble of 2 models (seeds 1, 2" in card
    assert "24 MOSI train+valid clips out of fold: Non0_acc_2" in card
    assert "MOSI valid is in the training data" in card
