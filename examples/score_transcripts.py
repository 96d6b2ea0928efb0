"""Score sentences with the default checkpoint (text only), as the engine's model sees them.

.venv/bin/python examples/score_transcripts.py "i loved it" "what a waste of time"
"""

import sys

import torch

from stream_mmsa.events import sentiment_label
from stream_mmsa.train.datasets import Sample, collate
from stream_mmsa.train.run import load_for_eval


def main(texts: list[str]) -> None:
    model, _, encoder = load_for_eval(None)  # None: the bundled text-mosi-mosei checkpoint
    states, mask = encoder.encode_bottom(texts)
    samples = [Sample(str(i), 0.0, {"text": states[i][mask[i]].numpy()}) for i in range(len(texts))]
    with torch.inference_mode():
        out = model(collate(samples, model.fusion.config.input_dims))
    for text, score, conf in zip(texts, out.score, out.confidence, strict=True):
        label = sentiment_label(float(score))
        print(f"{float(score):+.2f} {label:8} confidence {float(conf):.2f}  {text}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["i really loved this movie", "it was boring and way too long"])
