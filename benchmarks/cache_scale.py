"""Scale benchmark of the latent cache: build and read SD-VAE-shaped latents for 20,000 and 200,000 items.

    python benchmarks/cache_scale.py                     # 20,000 and 200,000 items (needs ~3.7 GB in --dir)
    python benchmarks/cache_scale.py --sizes 2000        # a smoke run

Each item is a tiny synthetic image (3x8x8) that a cheap synthetic encoder (a 1x1 convolution, then a
nearest upsampling) maps to an SD-VAE-shaped posterior: ``mu`` and ``logvar`` of 4x32x32 in float16, so
an item holds 16 KiB of latents. Encoding is therefore cheap and the numbers show the cache itself.

For each size, in fresh processes:

- **build**: ``VarMixupDataset(..., cache_path=...)`` on an empty folder: wall time (fingerprint, encoding,
  writing the shards), the process's peak RSS (``ru_maxrss``) against the cache's size on disk, and its
  anonymous memory once the dataset is built;
- **read**: a second process opens the cache (fingerprint + manifest, no encoding) and iterates it with
  a ``DataLoader`` of 2 workers (batches of 256, shuffled); the growth of the anonymous memory
  (``Pss_Anon`` of the main process and its workers, so pages shared after the fork count once) over the
  process before the loader started;
- **throughput**: items per second through ``__getitem__`` of the cache (memory-mapped shards, warm page
  cache) against a dataset over an in-memory tensor of the same latents, interleaved in rounds (the
  median of per-round ratios), directly and through the 2-worker ``DataLoader``.

The 1.28 M-item figures are extrapolations: time and disk scale with the items, the builder's memory is
bounded by a shard (not by the cache), and with 8 ranks each encodes 1/8 of the shards.
Prints a table and writes ``benchmarks/results-cache-scale.json``. The cache is written under ``--dir``
(default: the system temp folder) and deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from varmixup_aug import Posterior, VarMixupDataset

HERE = Path(__file__).resolve().parent
LATENT = (4, 32, 32)
IMAGENET = 1_281_167
GOAL_MB = 600


class SyntheticImages(Dataset):
    """Item ``i``: a 3x8x8 image in [0, 1] drawn from a generator seeded with ``i``, label ``i % 1000``."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        g = torch.Generator().manual_seed(i)
        return torch.rand(3, 8, 8, generator=g), i % 1000


class SyntheticEncoder(nn.Module):
    """A cheap stand-in for an SD-VAE encoder: (B, 3, 8, 8) images to float16 mu, logvar of (B, 4, 32, 32)."""

    channels, image_size, input_range = 3, 8, (0.0, 1.0)

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Conv2d(3, 8, 1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = nn.functional.interpolate(self.proj(x), scale_factor=4, mode="nearest").half()
        return h[:, :4].contiguous(), h[:, 4:].contiguous()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.zeros(z.shape[0], 3, 8, 8)


def _status(pid: int | str = "self") -> dict[str, int]:
    """kB fields of /proc/<pid>/status and /proc/<pid>/smaps_rollup."""
    out: dict[str, int] = {}
    for name in ("status", "smaps_rollup"):
        try:
            for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
                key, _, value = line.partition(":")
                if value.strip().endswith("kB"):
                    out[key.strip()] = int(value.split()[0])
        except OSError:
            pass
    return out


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _collate(batch: list[Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (torch.stack([p.mu for p, _ in batch]), torch.stack([p.logvar for p, _ in batch]),
            torch.tensor([y for _, y in batch]))


class InMemory(Dataset):
    """The same items as the cache, from tensors in memory."""

    def __init__(self, mu: torch.Tensor, logvar: torch.Tensor, labels: torch.Tensor) -> None:
        self.mu, self.logvar, self.labels = mu, logvar, labels.numpy()  # labels read as the cache reads them

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, i: int) -> Any:
        return Posterior(self.mu[i], self.logvar[i]), int(self.labels[i])


def _open(n: int, cache: Path, **kw: Any) -> VarMixupDataset:
    return VarMixupDataset(SyntheticImages(n), SyntheticEncoder(), cache_path=cache, batch_size=256,
                           progress=False, **kw)


def child_build(n: int, cache: Path) -> dict[str, Any]:
    before = _status()
    start = time.perf_counter()
    ds = _open(n, cache)
    seconds = time.perf_counter() - start
    after = _status()
    assert len(ds) == n
    return {"build_s": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "start_rss_mb": before["VmRSS"] / 1024, "start_anon_mb": before["RssAnon"] / 1024,
            "anon_after_mb": after["RssAnon"] / 1024,
            "cache_mb": sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / 2**20,
            "shards": len(list(cache.rglob("shard-*.safetensors")))}


def _loader_pass(ds: Dataset, measure: bool) -> tuple[float, float]:
    """Items per second over one shuffled 2-worker pass, and the anonymous memory (MB, Pss) of the main
    process and its workers near the end of the pass."""
    loader = DataLoader(ds, batch_size=256, shuffle=True, num_workers=2, collate_fn=_collate,
                        generator=torch.Generator().manual_seed(0))
    peak, start, seen = 0.0, time.perf_counter(), 0
    for i, (mu, _, _) in enumerate(loader):
        seen += mu.shape[0]
        if measure and i % 20 == 2:
            pids = [os.getpid(), *_children(os.getpid())]
            peak = max(peak, sum(_status(p).get("Pss_Anon", 0) for p in pids) / 1024)
    return seen / (time.perf_counter() - start), peak


def _direct(ds: Dataset, order: list[int]) -> float:
    start = time.perf_counter()
    for i in order:
        ds[i]
    return len(order) / (time.perf_counter() - start)


def child_read(n: int, cache: Path, rounds: int) -> dict[str, Any]:
    start = time.perf_counter()
    ds = _open(n, cache)
    open_s = time.perf_counter() - start
    base = _status()["Pss_Anon"] / 1024
    loader_ips, loader_anon = _loader_pass(ds, measure=True)
    if rounds == 0:
        return {"reader_growth_mb": loader_anon - base}
    m = min(n, 50_000)  # the throughput comparison: the first m items, from the cache and from memory
    first = [ds[i] for i in range(m)]
    memory = InMemory(torch.stack([p.mu for p, _ in first]), torch.stack([p.logvar for p, _ in first]),
                      ds.labels[:m].clone())
    del first
    order = torch.randperm(m, generator=torch.Generator().manual_seed(1)).tolist()
    sub = torch.utils.data.Subset(ds, range(m))
    direct, loaded = [], []
    for _ in range(rounds):
        cached_d, memory_d = _direct(ds, order), _direct(memory, order)
        direct.append((cached_d, memory_d))
        cached_l, memory_l = _loader_pass(sub, False)[0], _loader_pass(memory, False)[0]
        loaded.append((cached_l, memory_l))
    return {
        "open_s": open_s, "reader_anon_base_mb": base, "reader_anon_peak_mb": loader_anon,
        "reader_growth_mb": loader_anon - base, "loader_items_per_s_full_pass": loader_ips,
        "direct_items_per_s": {"cache": statistics.median(a for a, _ in direct),
                               "memory": statistics.median(b for _, b in direct),
                               "ratio": statistics.median(a / b for a, b in direct)},
        "loader_items_per_s": {"cache": statistics.median(a for a, _ in loaded),
                               "memory": statistics.median(b for _, b in loaded),
                               "ratio": statistics.median(a / b for a, b in loaded)},
        "throughput_items": m,
    }


def _run_child(role: str, n: int, cache: Path, rounds: int, **env_vars: str) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_vars}
    out = subprocess.run([sys.executable, __file__, "--child", role, "--sizes", str(n), "--dir", str(cache),
                          "--rounds", str(rounds)], capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        raise SystemExit(f"{role} {n}: failed\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(n: int, root: Path, rounds: int) -> dict[str, Any]:
    item_bytes = 2 * 2 * 4 * 32 * 32 + 8
    need = n * item_bytes * 1.1 + (64 << 20)
    free = shutil.disk_usage(root).free
    if free < need:
        raise SystemExit(f"{n} items need about {need / 1e9:.1f} GB in {root}, only {free / 1e9:.1f} GB are free")
    cache = Path(tempfile.mkdtemp(prefix=f"cache-scale-{n}-", dir=root))
    try:
        build = _run_child("build", n, cache, rounds)
        read = _run_child("read", n, cache, rounds)
        # glibc raises its mmap threshold as large blocks are freed, so the workers' heaps keep the freed
        # collate buffers; with a fixed threshold the growth left is what reading the cache costs.
        fixed = _run_child("read", n, cache, 0, MALLOC_MMAP_THRESHOLD_="131072")
        read["reader_growth_fixed_malloc_mb"] = fixed["reader_growth_mb"]
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return {"items": n, **build, **read}


def extrapolate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    big = max(rows, key=lambda r: r["items"])
    scale = IMAGENET / big["items"]
    fingerprint_s = big["open_s"] * scale  # every rank fingerprints the whole dataset
    encode_s = (big["build_s"] - big["open_s"]) * scale  # encoding and writing: split over the ranks
    cache_gb = big["cache_mb"] * scale / 1024
    return {"items": IMAGENET, "cache_gib": cache_gb, "one_process": {
        "build_s": fingerprint_s + encode_s, "builder_peak_mb": big["peak_rss_mb"],
        "builder_goal_mb": cache_gb * 1024 / 2 + GOAL_MB,
        "reader_goal_mb": cache_gb * 1024 / 4},
        "eight_ranks": {"build_s": fingerprint_s + encode_s / 8, "builder_peak_mb_per_rank": big["peak_rss_mb"],
                        "shards_per_rank": big["shards"] * scale / 8},
        "note": "time and disk linear in the items from the largest run (the fingerprint, which every rank "
                "computes, from the open time of the second process); memory bounded by a shard, so taken "
                "as measured"}


def table(rows: list[dict[str, Any]], extra: dict[str, Any]) -> str:
    header = ("| items | cache | build | builder peak RSS (goal) | reader anon growth, 2 workers: glibc default; "
              "fixed mmap threshold (goal) | items/s cache vs memory: direct | DataLoader |")
    lines = [header, "|---|---|---|---|---|---|---|"]
    for r in rows:
        goal_peak, goal_read = r["cache_mb"] / 2 + GOAL_MB, r["cache_mb"] / 4
        d, ld = r["direct_items_per_s"], r["loader_items_per_s"]
        lines.append(
            f"| {r['items']:,} | {r['cache_mb']:.0f} MiB | {r['build_s']:.1f} s | {r['peak_rss_mb']:.0f} MiB "
            f"(< {goal_peak:.0f}) | {r['reader_growth_mb']:.0f} MiB; {r['reader_growth_fixed_malloc_mb']:.0f} MiB "
            f"(< {goal_read:.0f}) | "
            f"{d['cache']:,.0f} vs {d['memory']:,.0f} ({d['ratio']:.2f}x) | "
            f"{ld['cache']:,.0f} vs {ld['memory']:,.0f} ({ld['ratio']:.2f}x) |")
    one, eight = extra["one_process"], extra["eight_ranks"]
    lines.append(f"| {extra['items']:,} (extrapolated) | {extra['cache_gib']:.1f} GiB | one process "
                 f"{one['build_s'] / 60:.0f} min, 8 ranks {eight['build_s'] / 60:.1f} min | "
                 f"{one['builder_peak_mb']:.0f} MiB (< {one['builder_goal_mb']:.0f}) | (< {one['reader_goal_mb']:.0f}) "
                 "| | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20000,200000")
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "results-cache-scale.json"))
    parser.add_argument("--child", choices=("build", "read"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.child:
        n = int(args.sizes)
        fn = child_build if args.child == "build" else child_read
        result = fn(n, Path(args.dir)) if args.child == "build" else fn(n, Path(args.dir), args.rounds)
        print(json.dumps(result))
        return
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        rows.append(measure(n, Path(args.dir), args.rounds))
        print(json.dumps(rows[-1]), flush=True)
    extra = extrapolate(rows)
    print(table(rows, extra))
    load = os.getloadavg()
    Path(args.out).write_text(json.dumps({
        "rows": rows, "imagenet": extra, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                      "torch": torch.__version__, "loadavg_at_end": load},
        "goals": {"builder_peak_mb": "< cache/2 + 600", "reader_growth_mb": "< cache/4",
                  "throughput": "within 10% of in-memory"}}, indent=2) + "\n")
    print(f"wrote {args.out} (load average at the end: {load[0]:.1f})")


if __name__ == "__main__":
    main()
