"""The CPU performance suite: bf16 and the compiled decoder against fp32, the conv roofline, and the targets.

    python benchmarks/perf.py            # full run (a quiet machine: about 7 minutes on 2 CPU cores)
    python benchmarks/perf.py --quick    # a smoke run (used by the test suite)
    python benchmarks/summary.py         # then: docs/benchmarks.md's tables and README's summary from the JSON

Four parts, each interleaved (every contender once per round, in turn; ratios are medians over rounds of
the ratio within a round, so drift of a shared machine hits all contenders alike):

1. **Roofline.** GFLOP/s of a 3x3 convolution with 128 channels (batch 128, 16x16) in fp32 and under bf16
   autocast, against the shipped VAE's decode of a batch of 128 latents, eager and compiled
   (``ConvVAE.compile_decoder``), fp32 and bf16. FLOPs are counted by ``torch.utils.flop_counter``.
2. **Cached generation.** ``VarMixupCollate`` on 128 cached posteriors: images per second in fp32, bf16,
   and bf16 with the compiled decoder; the largest difference of each from fp32.
3. **Training step** of three classifiers (CIFAR ResNet-18, FastCifarNet, SmallCNN), the classifier in fp32
   and under bf16 autocast: a batch from torchvision's ``v2.MixUp`` against VarMixup batches decoded from
   cached latents in fp32, bf16, and bf16 compiled.
4. **Training epoch** of FastCifarNet with ``num_workers=2``, the classifier in fp32 and in bf16: images per
   second with torchvision MixUp in the workers' collate against VarMixup (bf16, compiled) decoding in the
   workers' collate or in the main process (``VarMixupLoader``).

Writes ``benchmarks/results-perf.json`` (with the machine's load average before and after, so a run on a
busy machine shows as one) and prints the tables.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import Items, TorchvisionMixupCollate, cifar_resnet18, interleaved, timed
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate
from torch.utils.flop_counter import FlopCounterMode

HERE = Path(__file__).resolve().parent
BF16 = torch.bfloat16


def _amp(dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()


def count_flops(fn: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return int(counter.get_total_flops())


def _per_round_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    return statistics.median(a / b for a, b in zip(times[num], times[den]))


def _first_call_s(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def load_vaes(args: argparse.Namespace) -> tuple[Any, Any]:
    """The shipped VAE twice: eager, and with the compiled decoder (eager too with ``--no-compile``)."""
    from varmixup_aug import load_pretrained_vae

    return load_pretrained_vae("cifar10"), load_pretrained_vae("cifar10").compile_decoder(args.compile)


def roofline(vae: Any, vae_c: Any, args: argparse.Namespace) -> dict[str, Any]:
    b = args.batch
    conv = nn.Conv2d(128, 128, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(b, 128, 16, 16).contiguous(memory_format=torch.channels_last)
    z = torch.randn(b, vae.config.latent_dim, generator=torch.Generator().manual_seed(0))

    def run(fn: Callable[[Any], Any], arg: Any, dtype: torch.dtype | None) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode(), _amp(dtype):
                return fn(arg)
        return call

    calls = {"conv_fp32": run(conv, x, None), "conv_bf16": run(conv, x, BF16),
             "decode_fp32": run(vae.decode, z, None), "decode_bf16": run(vae.decode, z, BF16),
             "decode_fp32_compiled": run(vae_c.decode, z, None), "decode_bf16_compiled": run(vae_c.decode, z, BF16)}
    flops = {"conv": count_flops(lambda: conv(x)), "decode": count_flops(lambda: vae.decode(z))}
    first_call = {name: _first_call_s(fn) for name, fn in calls.items() if name.endswith("compiled")}
    ref = calls["decode_fp32"]().float()
    max_diff = {name: float((fn().float() - ref).abs().max()) for name, fn in calls.items()
                if name.startswith("decode") and name != "decode_fp32"}
    r = interleaved({name: timed(fn, args.repeats) for name, fn in calls.items()}, rounds=args.rounds)
    times = r["per_round_s"]
    rows = {}
    for name in calls:
        kind = name.split("_")[0]
        rows[name] = {"ms": 1e3 * r[f"{name}_s"], "gflop_per_s": flops[kind] / r[f"{name}_s"] / 1e9}
        if kind == "decode":
            # the decode's FLOP rate over the conv's, per round: (F_dec / t_dec) / (F_conv / t_conv)
            share = flops["decode"] / flops["conv"]
            dtype = "bf16" if "bf16" in name else "fp32"
            rows[name]["of_conv_roofline_same_dtype"] = share * _per_round_ratio(times, f"conv_{dtype}", name)
            rows[name]["of_conv_roofline_bf16"] = share * _per_round_ratio(times, "conv_bf16", name)
            rows[name]["speedup_over_fp32_eager"] = _per_round_ratio(times, "decode_fp32", name)
    return {"batch": b, "flops_per_batch": flops, "mflop_per_image_decode": flops["decode"] / b / 1e6,
            "first_call_s": first_call, "max_abs_diff_from_fp32": max_diff, "rows": rows, "rounds": r["rounds"],
            "per_round_s": times}


def cached_items(vae: Any, n: int, seed: int) -> tuple[list[Any], list[Any]]:
    """``n`` random images as ``(image, label)`` items, and their posteriors as ``(Posterior, label)`` items."""
    from varmixup_aug import Posterior

    g = torch.Generator().manual_seed(seed)
    images, labels = torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
    with torch.no_grad():
        mu, logvar = vae.encode(images)
    return ([(images[i], int(labels[i])) for i in range(n)],
            [(Posterior(mu[i], logvar[i]), int(labels[i])) for i in range(n)])


def _varmixup_collates(vae: Any, vae_c: Any) -> dict[str, Any]:
    from varmixup_aug import VarMixupCollate

    return {"varmixup_fp32": VarMixupCollate(vae, num_classes=10, seed=0),
            "varmixup_bf16": VarMixupCollate(vae, num_classes=10, seed=0, autocast_dtype=BF16),
            "varmixup_bf16_compiled": VarMixupCollate(vae_c, num_classes=10, seed=0, autocast_dtype=BF16)}


def cached_generation(vae: Any, vae_c: Any, args: argparse.Namespace) -> dict[str, Any]:
    _, latent_items = cached_items(vae, args.batch, seed=0)
    # The same draws (fresh collates, seed 0, first batch): how far bf16 and the compiled decoder are from fp32.
    first = {name: c(latent_items)[0] for name, c in _varmixup_collates(vae, vae_c).items()}
    max_diff = {name: float((x - first["varmixup_fp32"]).abs().max()) for name, x in first.items()}
    collates = _varmixup_collates(vae, vae_c)
    r = interleaved({name: timed(lambda c=c: c(latent_items), args.repeats) for name, c in collates.items()},
                    rounds=args.rounds)
    rows = {name: {"ms": 1e3 * r[f"{name}_s"], "images_per_s": args.batch / r[f"{name}_s"],
                   "max_abs_diff_from_fp32": max_diff[name],
                   "speedup_over_fp32": 1.0 if name == "varmixup_fp32" else 1 / r[f"ratio_{name}"]}
            for name in collates}
    return {"batch": args.batch, "rows": rows, "rounds": r["rounds"], "per_round_s": r["per_round_s"]}


def classifiers(quick: bool) -> dict[str, Callable[[], nn.Module]]:
    from varmixup_aug.harness import FastCifarNet, SmallCNN

    resnet = {} if quick else {"cifar_resnet18": cifar_resnet18}
    return {**resnet, "fast_cifar_net": FastCifarNet, "small_cnn": lambda: SmallCNN(10)}


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, target: torch.Tensor,
               dtype: torch.dtype | None) -> None:
    """One SGD step; under bf16 autocast the weights, optimiser and loss stay fp32 (as ``train-fast``)."""
    with _amp(dtype):
        logits = model(x.contiguous(memory_format=torch.channels_last))
    loss = torch.sum(-target * torch.log_softmax(logits.float(), 1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _model(make: Callable[[], nn.Module]) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = make().to(memory_format=torch.channels_last).train()
    return model, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)


def step_ratios(vae: Any, vae_c: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Per classifier and classifier precision: seconds per step with each batch source, and ratios to
    torchvision MixUp, interleaved."""
    from torchvision.transforms import v2

    image_items, latent_items = cached_items(vae, args.batch, seed=0)
    tv_mixup = v2.MixUp(alpha=1.0, num_classes=10)
    collates = _varmixup_collates(vae, vae_c)
    rows: dict[str, Any] = {}
    for name, make in classifiers(args.quick).items():
        for precision, dtype in (("fp32", None), ("bf16", BF16)):
            model, opt = _model(make)
            sources = {"torchvision_mixup": lambda: tv_mixup(*default_collate(image_items)),
                       **{k: (lambda c=c: c(latent_items)) for k, c in collates.items()}}
            steps = {k: (lambda src=src, model=model, opt=opt, dtype=dtype: train_step(model, opt, *src(), dtype))
                     for k, src in sources.items()}
            for step in steps.values():
                step()  # warm-up (and the compiled decoder's first call for this shape)
            repeats = 1 if name == "cifar_resnet18" else args.repeats
            r = interleaved({k: timed(fn, repeats) for k, fn in steps.items()}, rounds=args.rounds)
            rows[f"{name}/{precision}"] = {
                "classifier": name, "precision": precision,
                "step_ms": {k: 1e3 * r[f"{k}_s"] for k in steps},
                "ratio": {k: r[f"ratio_{k}"] for k in list(steps)[1:]},
                "rounds": r["rounds"], "per_round_s": r["per_round_s"],
                "parameters": sum(p.numel() for p in model.parameters())}
    return rows


def epoch_throughput(vae: Any, vae_c: Any, args: argparse.Namespace) -> dict[str, Any]:
    """FastCifarNet, ``num_workers=2``: images per second over an epoch (after a warm-up epoch), the
    classifier in fp32 and in bf16; VarMixup decodes in bf16 with the compiled decoder."""
    from varmixup_aug import VarMixup, VarMixupCollate, VarMixupLoader
    from varmixup_aug.harness import FastCifarNet

    image_items, latent_items = cached_items(vae, args.epoch_images, seed=1)
    sources: dict[str, tuple[Dataset, Callable[..., Any], Callable[[Any], Any]]] = {
        "torchvision_mixup": (Items(image_items), TorchvisionMixupCollate(), lambda loader: loader),
        "varmixup_workers": (Items(latent_items), VarMixupCollate(vae_c, num_classes=10, seed=0, autocast_dtype=BF16),
                             lambda loader: loader),
        "varmixup_main": (Items(latent_items), default_collate,
                          lambda loader: VarMixupLoader(loader, VarMixup(vae_c, num_classes=10, seed=0,
                                                                         autocast_dtype=BF16))),
    }
    rows: dict[str, Any] = {}
    images = args.epoch_images // args.batch * args.batch
    for precision, dtype in (("fp32", None), ("bf16", BF16)):
        contenders = {}
        for source, (dataset, collate, wrap) in sources.items():
            model, opt = _model(FastCifarNet)
            loader = wrap(DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=2, collate_fn=collate,
                                     drop_last=True, persistent_workers=True,
                                     generator=torch.Generator().manual_seed(0)))
            for x, t in loader:  # warm-up epoch: workers start, the decoders compile
                train_step(model, opt, x, t, dtype)
            contenders[source] = _epoch_timer(model, opt, loader, dtype)
        r = interleaved(contenders, rounds=args.epoch_rounds)
        row: dict[str, Any] = {f"{s}_images_per_s": images / r[f"{s}_s"] for s in sources}
        row.update({f"throughput_ratio_{s}": 1 / r[f"ratio_{s}"] for s in list(sources)[1:]})
        row.update(rounds=r["rounds"], per_round_s=r["per_round_s"], images=images)
        rows[f"fast_cifar_net/{precision}"] = row
    return rows


def _epoch_timer(model: nn.Module, opt: torch.optim.Optimizer, loader: Any, dtype: torch.dtype | None
                 ) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter()
        for x, t in loader:
            train_step(model, opt, x, t, dtype)
        return time.perf_counter() - start

    return run


def machine() -> dict[str, Any]:
    from varmixup_aug.harness import cpu_bf16_units

    return {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "python": sys.version.split()[0],
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_bf16_units": list(cpu_bf16_units())}


def print_tables(result: dict[str, Any]) -> None:
    roof = result["roofline"]
    print(f"Roofline, batch {roof['batch']} (decode {roof['mflop_per_image_decode']:.1f} MFLOP per image)")
    print(f"{'':24} {'ms':>8} {'GFLOP/s':>8} {'of conv (same dtype)':>21} {'vs fp32 eager':>14}")
    for name, row in roof["rows"].items():
        extra = (f"{100 * row['of_conv_roofline_same_dtype']:>20.0f}% {row['speedup_over_fp32_eager']:>13.2f}x"
                 if "speedup_over_fp32_eager" in row else "")
        print(f"{name:24} {row['ms']:>8.1f} {row['gflop_per_s']:>8.0f} {extra}")
    print("first calls of the compiled decoder (s): "
          + ", ".join(f"{k} {v:.1f}" for k, v in roof["first_call_s"].items()))
    gen = result["cached_generation"]
    print(f"\nCached generation (VarMixupCollate on {gen['batch']} Posterior items)")
    for name, row in gen["rows"].items():
        print(f"{name:24} {row['images_per_s']:>8.0f} images/s  x{row['speedup_over_fp32']:.2f}  "
              f"max diff {row['max_abs_diff_from_fp32']:.4f}")
    print("\nTraining step, VarMixup (cached latents) / torchvision MixUp")
    steps = result["training_step"]
    sources = list(next(iter(steps.values()))["ratio"])
    print(f"{'classifier/precision':24} {'tv ms':>8} " + " ".join(f"{s.removeprefix('varmixup_'):>14}" for s in sources))
    for name, row in steps.items():
        print(f"{name:24} {row['step_ms']['torchvision_mixup']:>8.1f} "
              + " ".join(f"{row['ratio'][s]:>14.3f}" for s in sources))
    print("\nTraining epoch, FastCifarNet, num_workers=2, throughput ratio to torchvision MixUp")
    for name, row in result["training_epoch"].items():
        print(f"{name:24} tv {row['torchvision_mixup_images_per_s']:.0f} images/s; VarMixup in the workers "
              f"{row['throughput_ratio_varmixup_workers']:.3f}, in the main process {row['throughput_ratio_varmixup_main']:.3f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes and one round (smoke test)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the step and decode timings")
    p.add_argument("--repeats", type=int, default=3, help="calls per contender per round (1 for ResNet-18 steps)")
    p.add_argument("--epoch-images", type=int, default=2560)
    p.add_argument("--epoch-rounds", type=int, default=3, help="interleaved epochs per source")
    p.add_argument("--parts", default="roofline,generation,step,epoch", help="comma-separated parts to run")
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="the 'compiled' contenders run eager (the smoke test's default: compiling takes seconds)")
    p.add_argument("--out", default=str(HERE / "results-perf.json"))
    args = p.parse_args()
    if args.quick:
        args.batch, args.rounds, args.repeats, args.epoch_images, args.epoch_rounds = 8, 1, 1, 32, 1
        args.compile = False
    parts = set(args.parts.split(","))
    started, load_before = time.time(), os.getloadavg()
    vae, vae_c = load_vaes(args)
    result: dict[str, Any] = {"machine": machine()}
    runs = (("roofline", "roofline", roofline), ("generation", "cached_generation", cached_generation),
            ("step", "training_step", step_ratios), ("epoch", "training_epoch", epoch_throughput))
    for part, key, fn in runs:
        if part in parts:
            start, load = time.time(), os.getloadavg()[0]
            result[key] = fn(vae, vae_c, args)
            result.setdefault("runs", {})[key] = {"wall_s": time.time() - start, "load_average_before": load,
                                  "load_average_after": os.getloadavg()[0],
                                  **{k: v for k, v in vars(args).items() if k not in ("out", "parts")}}
    out = Path(args.out).resolve()
    if len(parts) < len(runs) and out.is_file():  # a run of some parts updates those in the JSON
        old = json.loads(out.read_text())
        result = {**old, **result, "runs": {**old.get("runs", {}), **result.get("runs", {})}}
    result["machine"] = machine()
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out)  # atomic: a killed run leaves the previous results intact
    if all(key in result for _, key, _ in runs):
        print_tables(result)
    print(f"\nwrote {out.name} in {time.time() - started:.0f} s (load average {load_before[0]:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
