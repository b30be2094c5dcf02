"""What `synth evaluate` costs and gains, on real aligned text. Measured, printed.

The dataset: UDHR sentence pairs of related Bantu languages against English (Zulu from articles
1-6; Xhosa, Chichewa and Shona from all 30; 171 pairs), published by `synth filter` with the
model-based filters off (the pairs are real). Held out: the other 24 Zulu articles (whole
articles), of which those sharing a text with a training pair are left out by the evaluation.

Printed:
- the evaluation with its defaults (student all-MiniLM-L6-v2, ranking loss, 8 epochs, batch 16,
  learning rate 1e-4, length 128): every method's scores, the time of each stage, training
  pairs/s, and whether it stays under the 4 minutes a 200-pair evaluation may take here;
- side by side, one training epoch with length-grouped batches (synth's) and with
  sentence-transformers' random no-duplicates batches, at lengths 128 and 64: pairs/s;
- with --ablation, the shuffled-pairs control and the kept+rejected ablation (longer).

    .venv/bin/python bench/evaluate.py                 # ~4 min on 2 quiet cores
    .venv/bin/python bench/evaluate.py --ablation      # + the controls

On a GPU (`--device cuda`, e.g. through the device tool) the same script prints the same figures.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synth.config import EvaluateConfig  # noqa: E402
from synth.evaluate import evaluate  # noqa: E402
from synth.evaluate.dataset import PublishedDataset  # noqa: E402
from synth.evaluate.report import table  # noqa: E402
from synth.testing.udhr_bitext import article_pairs, sentence_pairs, write_tsv  # noqa: E402

SYNTH = Path(sys.executable).with_name("synth")


def build(root: Path) -> tuple[Path, Path]:
    train = sentence_pairs("zul", articles=range(6))
    for lang in ("xho", "nya", "sna"):
        train += sentence_pairs(lang)
    tsv = write_tsv(train, root / "bantu-en.tsv")
    held_out = write_tsv(article_pairs("zul", articles=range(6, 30)), root / "zul-held-out.tsv")
    out = root / "bantu-en"
    subprocess.run(
        [str(SYNTH), "filter", str(tsv), "--src-lang", "zu", "--tgt-lang", "en", "--out", str(out), "--embedder", "none",
         "--lid-detectors", "none", "--max-words", "off", "--min-terminal-punctuation", "off", "--splits", "train"],
        check=True, capture_output=True,
    )
    return out, held_out


def batching_throughput(dataset: Path, device: str) -> list[tuple[str, int, float]]:
    from synth.evaluate import student

    pairs = PublishedDataset.open(str(dataset)).pairs("train")
    rows = []
    for length in (128, 64):
        for batching in ("length", "random"):
            model = student.load_model(student.DEFAULT_STUDENT, device, length)
            done = student.train(model, pairs, kind="bitext", objective="ranking", epochs=1, batch_size=16, learning_rate=1e-4, seed=0, batching=batching)
            rows.append((batching, length, done["pairs_per_second"]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ablation", action="store_true", help="also the shuffled-pairs control and kept+rejected")
    parser.add_argument("--no-compare", action="store_true", help="skip the batching comparison")
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cuda: {torch.cuda.is_available()}, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as scratch:
        dataset, held_out = build(Path(scratch))
        config = EvaluateConfig(
            dataset=str(dataset), eval=[str(held_out)], device=args.device, card=False,
            ablation=["shuffled"] if args.ablation else [],
        )
        started = time.perf_counter()
        results = evaluate(config)
        wall = time.perf_counter() - started
        print(f"\n## synth evaluate with its defaults ({results['train_pairs']} training pairs, device {results['settings']['device']})\n")
        print(table(results))
        training = results["training"]["finetuned"]
        print(f"\nwall {wall:.0f} s ({'under' if wall < 240 else 'OVER'} 4 min); stages (s): {json.dumps(results['timing'])}")
        print(f"training: {training['steps']} steps, {training['seconds']:.0f} s, {training['pairs_per_second']:.1f} pairs/s (pairs x epochs / s)")
        print(f"evaluation (scoring every method on {results['eval'][0]['pairs']} held-out pairs): {results['timing']['base_and_procrustes'] + results['timing']['scoring']:.1f} s")
        if not args.no_compare:
            print("\n## one epoch, pairs/s by batching and max length\n\n| batching | max length | pairs/s |\n|---|---:|---:|")
            for batching, length, rate in batching_throughput(dataset, results["settings"]["device"]):
                print(f"| {'length-grouped (synth)' if batching == 'length' else 'random, no duplicates (sentence-transformers)'} | {length} | {rate:.1f} |")


if __name__ == "__main__":
    main()
