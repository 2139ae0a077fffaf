"""Mixup Inference over a whole CIFAR-10 test split in one call, with bounded memory.

Wraps a classifier trained by ``varmixup-aug train-fast`` (or ``train-classifier``) in
``MIPredictor`` with a pool of clean training images, predicts every test image in one ``predict``
call, and prints accuracy, time and the peak resident memory of that call::

    python examples/mi_predict_cifar10.py --checkpoint results/cifar10-fast/mixup \\
        --data-dir ../shared/data/cifar10-jpg.tar.gz --num-samples 30 --chunk-size 1024

Memory is bounded by ``--chunk-size`` (mixes per model call), not by the number of test images
times ``--num-samples``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from varmixup_aug import MIPredictor
from varmixup_aug.harness import load_classifier, load_tensor_dataset, open_image_dataset, read_classifier_metadata


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="a train-fast or train-classifier run folder, or its checkpoint file")
    p.add_argument("--data-dir", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--mode", default="ol", choices=["ol", "pl", "combined"])
    p.add_argument("--num-samples", type=int, default=30)
    p.add_argument("--lam", type=float, default=0.5)
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument("--pool-size", type=int, default=1000, help="clean training images in the MI pool")
    p.add_argument("--limit-test", type=int, default=None, help="default: the whole test split")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = load_classifier(args.checkpoint)
    meta = read_classifier_metadata(args.checkpoint)
    pool_x, pool_y = load_tensor_dataset(open_image_dataset(args.data_dir, "train"), limit=args.pool_size,
                                         progress=False)
    test_x, test_y = load_tensor_dataset(open_image_dataset(args.data_dir, "test"), limit=args.limit_test,
                                         progress=False)
    pool = (pool_x.float() / 255, pool_y)
    test_x = test_x.float() / 255
    mi = MIPredictor(model, pool, num_classes=10, mode=args.mode, num_samples=args.num_samples, lam=args.lam,
                     chunk_size=args.chunk_size, seed=0)

    with torch.inference_mode():
        plain = torch.cat([model(c) for c in test_x.split(1000)]).argmax(1)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (Linux)
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    pred = mi.predict(test_x)  # the whole split in one call
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    n = test_x.shape[0]
    print(f"model: {meta.get('method')} ({args.checkpoint}); pool {pool_x.shape[0]} train images")
    print(f"plain accuracy {100 * (plain == test_y).float().mean():.2f}%  "
          f"MI-{args.mode.upper()} (N={args.num_samples}, lam={args.lam}) accuracy "
          f"{100 * (pred == test_y).float().mean():.2f}% on {n} test images")
    print(f"one predict call: {n * args.num_samples:,} mixes in chunks of {args.chunk_size}, {seconds:.1f} s, "
          f"peak RSS growth {(peak - before) / 1024:.0f} MiB (the test images themselves: "
          f"{test_x.numel() * 4 / 2**20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
