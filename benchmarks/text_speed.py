"""Time per segment of the text branch (encoder + head + table), on real dialogue turns.

    .venv/bin/python benchmarks/text_speed.py --data ../shared/data --threads 2 [--head FILE]

Reads the first ``--n`` utterances of MELD dev as one recording's segment grid (in spoken order,
so a head with dialogue context reads each with the turns before it) and times
:func:`multimodal_ser.text.text_table` as the pipeline calls it (the whole grid at once, batches of
64), and one segment per call (the latency of a lone segment), with the packaged text head or the
head file ``--head`` (for example one ``mser train text`` wrote). Models are loaded and warmed up
before timing; the best of ``--repeats`` runs is printed, in milliseconds per segment.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from multimodal_ser.grid import make_grid
from multimodal_ser.text import TextEmotionModel, text_table
from multimodal_ser.training.text import load_meld


def _best_seconds(run, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Text branch time per segment.")
    parser.add_argument("--data", type=Path, required=True, help="folder with meld/")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=200, help="segments (MELD dev utterances)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--head", type=Path, help="a text head file (default: the packaged one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    texts = load_meld(args.data, "dev").texts[: args.n]
    grid = make_grid(list(range(len(texts))), [t + 1.0 for t in range(len(texts))], texts=texts)
    model = TextEmotionModel() if args.head is None else TextEmotionModel(head_path=args.head)
    text_table(grid.head(8), model)  # warm-up
    whole = _best_seconds(lambda: text_table(grid, model), args.repeats)
    single = _best_seconds(lambda: [text_table(grid.iloc[[i]], model) for i in range(len(grid))], args.repeats)
    words = sum(len(t.split()) for t in texts) / len(texts)
    print(f"text branch, {len(texts)} MELD dev segments ({words:.1f} words on average), {args.threads} threads, "
          f"head context {model.context}, encoder {model.encoder.id}:")
    print(f"  whole grid at once: {1000 * whole / len(texts):.2f} ms per segment")
    print(f"  one segment a call: {1000 * single / len(texts):.2f} ms per segment")


if __name__ == "__main__":
    main()
