"""Benchmarks: VarMixup batch generation and MIPredictor throughput and memory, against floors and peers.

    python benchmarks/run.py                      # full run, shipped CIFAR-10 VAE
    python benchmarks/run.py --quick              # a smoke run (used by the test suite)

Prints a table, writes ``benchmarks/results.json`` and ``benchmarks/scaling.png``. All timings are
medians of ``torch.utils.benchmark`` measurements taken side by side in one process; ratios are
the numbers to compare, since absolute times on shared machines drift.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from _common import median_time
from torch.utils.data import default_collate

HERE = Path(__file__).resolve().parent


def batch_generation(vae: Any, args: argparse.Namespace) -> dict[str, Any]:
    from torchvision.transforms import v2

    from varmixup_aug import Posterior, VarMixupCollate
    from varmixup_aug.harness import SmallCNN

    b = args.batch
    g = torch.Generator().manual_seed(0)
    images = torch.rand(b, 3, 32, 32, generator=g)
    labels = torch.randint(0, 10, (b,), generator=g)
    items = [(images[i], int(labels[i])) for i in range(b)]
    with torch.no_grad():
        mu, logvar = vae.encode(images)
    latent_items = [(Posterior(mu[i], logvar[i]), int(labels[i])) for i in range(b)]

    tv_mixup = v2.MixUp(alpha=1.0, num_classes=10)

    def tv_collate(batch: list[Any]) -> Any:
        return tv_mixup(*default_collate(batch))

    vm_collate = VarMixupCollate(vae, num_classes=10, seed=0)
    z = mu.clone()

    def floor() -> Any:
        with torch.inference_mode():
            return vae.decode(z)

    t = args.min_run_time
    res = {
        "a_torchvision_mixup_collate": median_time(lambda: tv_collate(items), min_run_time=t),
        "b_varmixup_collate_encoder": median_time(lambda: vm_collate(items), min_run_time=t),
        "c_varmixup_cached_latents": median_time(lambda: vm_collate(latent_items), min_run_time=t),
        "d_floor_decode_only": median_time(floor, min_run_time=t),
    }

    # One training step of the README's example classifier, with each batch source.
    model = SmallCNN(10).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(source: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            x, y = source()
            loss = loss_fn(model(x.contiguous(memory_format=torch.channels_last)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run

    res["step_torchvision_mixup"] = median_time(step(lambda: tv_collate(items)), min_run_time=t)
    res["step_varmixup_cached"] = median_time(step(lambda: vm_collate(latent_items)), min_run_time=t)
    res["step_varmixup_encoder"] = median_time(step(lambda: vm_collate(items)), min_run_time=t)
    res["images_per_s"] = {k: b / v for k, v in res.items() if not k.startswith("step")}
    res["ratios"] = {
        "c_over_d (target <= 1.15)": res["c_varmixup_cached_latents"] / res["d_floor_decode_only"],
        "b_over_a": res["b_varmixup_collate_encoder"] / res["a_torchvision_mixup_collate"],
        "step_cached_over_tv (target <= 1.25)": res["step_varmixup_cached"] / res["step_torchvision_mixup"],
        "step_encoder_over_tv": res["step_varmixup_encoder"] / res["step_torchvision_mixup"],
    }
    return res


def _mi_setup(args: argparse.Namespace, *, chunk_size: int | None = 1024) -> tuple[Any, Any, Any]:
    from varmixup_aug import MIPredictor
    from varmixup_aug.harness import SmallCNN

    torch.manual_seed(0)
    model = SmallCNN(10).eval()
    pool = (torch.rand(500, 3, 32, 32), torch.arange(500) % 10)
    mi = MIPredictor(model, pool, num_classes=10, mode="ol", num_samples=args.mi_n, chunk_size=chunk_size, seed=0)
    x = torch.rand(args.mi_batch, 3, 32, 32)
    return model, mi, x


def mixup_inference(args: argparse.Namespace) -> dict[str, Any]:
    model, mi, x = _mi_setup(args)
    b, n = x.shape[0], args.mi_n
    pool_images = torch.rand(500, 3, 32, 32)  # class c at indices c, c + 10, ...
    big = torch.rand(b * n, 3, 32, 32)
    t = args.min_run_time

    def floor() -> Any:
        with torch.inference_mode():
            return model(big)

    def floor_chunked() -> Any:
        # The same B*N forwards in the chunks MIPredictor uses (1024): smaller batches stay in cache.
        with torch.inference_mode():
            return [model(c) for c in big.split(mi.chunk_size)]

    def batched() -> Any:
        with torch.inference_mode():
            return mi(x)

    def naive_loop() -> Any:
        # The paper's public code: one sample at a time, one forward per mixing round.
        with torch.inference_mode():
            out = []
            for i in range(b):
                xi = x[i : i + 1]
                y_hat = model(xi).argmax(1)
                probs = torch.zeros(1, 10)
                for _ in range(n):
                    cls = int(torch.randint(0, 9, (1,)))
                    cls = cls + (cls >= int(y_hat))
                    idx = int(torch.randint(0, 50, (1,))) * 10 + cls
                    probs += torch.softmax(model(0.5 * xi + 0.5 * pool_images[idx : idx + 1]), 1)
                out.append(probs / n)
            return torch.cat(out)

    res = {
        "floor_one_forward_BxN": median_time(floor, min_run_time=t),
        "floor_chunked_forward_BxN": median_time(floor_chunked, min_run_time=t),
        "mi_batched": median_time(batched, min_run_time=t),
        "naive_per_sample_loop": median_time(naive_loop, min_run_time=t, warmup=1),
    }
    res["ratios"] = {
        "batched_over_floor (target <= 1.10)": res["mi_batched"] / res["floor_one_forward_BxN"],
        "batched_over_chunked_floor": res["mi_batched"] / res["floor_chunked_forward_BxN"],
        "loop_over_batched (target >= 10)": res["naive_per_sample_loop"] / res["mi_batched"],
    }
    return res


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peak_rss_child(chunk: str, batch: int, n: int) -> None:
    """Run in a fresh process: peak RSS growth of one MI call with this chunk size (Linux)."""
    args = argparse.Namespace(mi_n=n, mi_batch=batch)
    _, mi, x = _mi_setup(args, chunk_size=None if chunk == "all" else int(chunk))
    with torch.inference_mode():
        mi(x[:1])  # warm up allocator and kernels
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = _status_kib("VmRSS")
    with torch.inference_mode():
        mi(x)
    peak = _status_kib("VmHWM")
    print(json.dumps({"chunk": chunk, "peak_rss_growth_mib": (peak - before) / 1024}))


def mi_memory(args: argparse.Namespace) -> dict[str, float]:
    out = {}
    for chunk in ("256", "1024", "all"):
        proc = subprocess.run(
            [sys.executable, __file__, "--_peak-child", chunk, "--mi-batch", str(args.mi_batch), "--mi-n", str(args.mi_n)],
            capture_output=True, text=True, check=True,
        )
        out[chunk] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_growth_mib"]
    return out


def scaling(vae: Any, args: argparse.Namespace) -> dict[str, Any]:
    from varmixup_aug import Posterior, VarMixupCollate

    collate = VarMixupCollate(vae, num_classes=10, seed=0)
    by_batch = {}
    for b in args.scaling_batches:
        images = torch.rand(b, 3, 32, 32)
        with torch.no_grad():
            mu, logvar = vae.encode(images)
        items = [(Posterior(mu[i], logvar[i]), i % 10) for i in range(b)]
        by_batch[b] = median_time(lambda: collate(items), min_run_time=args.min_run_time / 2, warmup=1)
    by_n = {}
    for n in args.scaling_ns:
        ns = argparse.Namespace(mi_n=n, mi_batch=args.mi_batch)
        _, mi, x = _mi_setup(ns)

        def call() -> Any:
            with torch.inference_mode():
                return mi(x)

        by_n[n] = median_time(call, min_run_time=args.min_run_time / 2, warmup=1)
    return {"varmixup_cached_by_batch_s": by_batch, "mi_by_num_samples_s": by_n}


def profile(vae: Any, args: argparse.Namespace, path: Path) -> None:
    """Operator profiles of one MI call and one cached-latent VarMixup batch, for the README."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from varmixup_aug import Posterior, VarMixupCollate

    _, mi, x = _mi_setup(args)
    b = args.batch
    with torch.no_grad():
        mu, logvar = vae.encode(torch.rand(b, 3, 32, 32))
    items = [(Posterior(mu[i], logvar[i]), i % 10) for i in range(b)]
    collate = VarMixupCollate(vae, num_classes=10, seed=0)
    sections = []
    for name, fn in (("MIPredictor call (MI-OL)", lambda: mi(x)), ("VarMixup batch from cached latents",
                                                                   lambda: collate(items))):
        with torch.inference_mode():
            fn()
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                fn()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8)
        sections.append(f"## {name}\n\n{table}")
    path.write_text("\n".join(sections))


def plot(scale: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    bb = scale["varmixup_cached_by_batch_s"]
    axes[0].plot(list(bb), [1e3 * v for v in bb.values()], "o-")
    axes[0].set(xscale="log", yscale="log", xlabel="batch size", ylabel="ms per batch",
                title="VarMixup from cached latents")
    axes[0].set_xticks(list(bb), [str(v) for v in bb], minor=False)
    axes[0].xaxis.set_minor_locator(NullLocator())
    nn_ = scale["mi_by_num_samples_s"]
    axes[1].plot(list(nn_), [1e3 * v for v in nn_.values()], "o-")
    axes[1].set(xscale="log", yscale="log", xlabel="N (MI samples)", ylabel="ms per batch of 64",
                title="MIPredictor (MI-OL)")
    axes[1].set_xticks(list(nn_), [str(v) for v in nn_], minor=False)
    axes[1].xaxis.set_minor_locator(NullLocator())
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vae", default=None, help="VAE checkpoint; default: the shipped cifar10 VAE")
    p.add_argument("--quick", action="store_true", help="tiny sizes and short timings (smoke test)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--mi-batch", type=int, default=64)
    p.add_argument("--mi-n", type=int, default=30)
    p.add_argument("--min-run-time", type=float, default=2.0)
    p.add_argument("--out", default=str(HERE / "results.json"))
    p.add_argument("--plot", default=str(HERE / "scaling.png"))
    p.add_argument("--_peak-child", dest="peak_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.peak_child:
        _peak_rss_child(args.peak_child, args.mi_batch, args.mi_n)
        return 0
    from varmixup_aug import load_pretrained_vae, load_vae

    args.scaling_batches = [32, 64, 128, 256, 512]
    args.scaling_ns = [1, 2, 4, 8, 16, 32, 64]
    if args.quick:
        args.batch, args.mi_batch, args.mi_n, args.min_run_time = 16, 4, 3, 0.05
        args.scaling_batches, args.scaling_ns = [8, 16], [1, 2]
    vae = load_vae(args.vae) if args.vae else load_pretrained_vae("cifar10")
    started = time.time()
    gen = batch_generation(vae, args)
    mi = mixup_inference(args)
    mem = mi_memory(args)
    scale = scaling(vae, args)
    plot(scale, Path(args.plot))
    profile(vae, args, Path(args.out).with_name("profile.txt"))
    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cuda": torch.cuda.is_available()},
        "settings": {"batch": args.batch, "mi_batch": args.mi_batch, "mi_n": args.mi_n,
                     "min_run_time_s": args.min_run_time, "quick": args.quick},
        "batch_generation": gen, "mixup_inference": mi, "mi_peak_rss_growth_mib": mem, "scaling": scale,
        "wall_s": time.time() - started,
    }
    Path(args.out).write_text(json.dumps(result, indent=2))

    print(f"\nVarMixup batch generation, B={args.batch}, medians")
    print(f"{'path':38s} {'ms/batch':>10s} {'images/s':>10s}")
    for key in ("a_torchvision_mixup_collate", "b_varmixup_collate_encoder", "c_varmixup_cached_latents",
                "d_floor_decode_only"):
        print(f"{key:38s} {1e3 * gen[key]:10.2f} {gen['images_per_s'][key]:10.0f}")
    for key in ("step_torchvision_mixup", "step_varmixup_cached", "step_varmixup_encoder"):
        print(f"{key:38s} {1e3 * gen[key]:10.2f}")
    print(f"\nMIPredictor, B={args.mi_batch}, N={args.mi_n}, medians")
    for key in ("floor_one_forward_BxN", "floor_chunked_forward_BxN", "mi_batched", "naive_per_sample_loop"):
        print(f"{key:38s} {1e3 * mi[key]:10.2f}")
    print("\nPeak RSS growth of one MI call by chunk size (MiB): "
          + ", ".join(f"{k}: {v:.0f}" for k, v in mem.items()))
    print("\nRatios")
    for k, v in {**gen["ratios"], **mi["ratios"]}.items():
        print(f"  {k:42s} {v:6.2f}")
    print(f"\nwrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
