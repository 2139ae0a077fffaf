"""Test accuracy of trained classifiers with and without flip test-time augmentation.

No reported number uses test-time augmentation; this measures how much of the gap to airbench94's
published 94.0% (which averages the logits of each image and its mirror) is that averaging::

    python examples/flip_tta_accuracy.py results/cifar10-fast/erm results/cifar10-fast/mixup \\
        --data-dir ../shared/data/cifar10-jpg.tar.gz
"""

from __future__ import annotations

import argparse

import torch

from varmixup_aug.harness import load_classifier, load_tensor_dataset, open_image_dataset


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="train-fast or train-classifier run folders")
    p.add_argument("--data-dir", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x, y = load_tensor_dataset(open_image_dataset(args.data_dir, "test"), progress=False)
    x = x.float().div_(255).contiguous(memory_format=torch.channels_last)
    print("| checkpoint | test images | accuracy | with flip TTA |")
    print("|---|---:|---:|---:|")
    for path in args.checkpoints:
        model = load_classifier(path)
        with torch.inference_mode():
            plain = torch.cat([model(c) for c in x.split(500)])
            flipped = torch.cat([model(c.flip(3)) for c in x.split(500)])
        acc = 100 * (plain.argmax(1) == y).double().mean()
        tta = 100 * ((plain + flipped).argmax(1) == y).double().mean()
        print(f"| {path} | {y.numel()} | {acc:.2f} | {tta:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
