"""Write docs/benchmarks.md's performance tables and README's performance summary from results-perf.json.

    python benchmarks/summary.py            # rewrite the blocks between the <!-- perf:NAME --> markers
    python benchmarks/summary.py --check    # exit 1 if a block differs from what the JSON gives (a test runs it)

Every figure in those blocks comes from the JSON that ``benchmarks/perf.py`` wrote; nothing is typed in
by hand except the issue's figures from before the bf16 work (``BEFORE``), which are labelled as such.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# Figures from before this work (issue 26, measured on a quiet machine), shown next to the new ones.
BEFORE = {"fast_cifar_net": 1.15, "small_cnn": 1.35, "epoch": 0.81}
GOALS = {"fast_cifar_net": 1.05, "small_cnn": 1.15, "epoch": 0.95, "roofline": 0.50}
NAMES = {"cifar_resnet18": "CIFAR ResNet-18", "fast_cifar_net": "`FastCifarNet`", "small_cnn": "`SmallCNN`"}
SOURCES = {"varmixup_fp32": "fp32", "varmixup_bf16": "bf16", "varmixup_bf16_compiled": "bf16, compiled"}
BEST = "varmixup_bf16_compiled"


_BUSY = False  # set per render: a run on a busy machine gets no verdicts


def _busy(result: dict[str, Any]) -> bool:
    load = max(max(r["load_average_before"], r["load_average_after"]) for r in result["runs"].values())
    return load >= 1.5 * result["machine"]["cpus"]


def _verdict(value: float, goal: float, at_most: bool) -> str:
    if _BUSY:
        return "no verdict (busy machine)"
    met = value <= goal if at_most else value >= goal
    return "met" if met else "missed"


PARTS = ("roofline", "cached_generation", "training_step", "training_epoch")


def _load_note(result: dict[str, Any]) -> str:
    m = result["machine"]
    runs = [result["runs"][k] for k in PARTS]
    units = ", ".join(m["cpu_bf16_units"]) or "none"
    load = max(max(r["load_average_before"], r["load_average_after"]) for r in runs)
    quiet = ("a quiet machine" if not _busy(result)
             else "**a busy machine (other jobs shared the cores): read the ratios, not the times**")
    rounds = sorted({r["rounds"] for r in runs} | {r["epoch_rounds"] for r in runs})
    return (f"Measured by `python benchmarks/perf.py` ({sum(r['wall_s'] for r in runs) / 60:.1f} min) on "
            f"{m['machine']}, {m['cpus']} CPUs, {m['threads']} threads, torch {m['torch']}, bf16 units: {units}; "
            f"the load average reached {load:.1f}, {quiet}. Ratios are medians over the interleaved rounds "
            f"({', '.join(map(str, rounds))} per part; see the JSON); the epochs have "
            f"{result['training_epoch']['fast_cifar_net/fp32']['images']:,} images.")


def targets(result: dict[str, Any]) -> str:
    steps, epoch, roof = result["training_step"], result["training_epoch"], result["roofline"]["rows"]
    lines = [_load_note(result), "",
             "| measure | before (issue 26) | this run, fp32 decode | this run, bf16 compiled decode, classifier fp32 "
             "| same, classifier bf16 | goal | |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for key in ("fast_cifar_net", "small_cnn"):
        fp32, bf16 = steps[f"{key}/fp32"]["ratio"], steps[f"{key}/bf16"]["ratio"]
        lines.append(f"| {NAMES[key]} training step, VarMixup / torchvision MixUp | {BEFORE[key]:.2f} | "
                     f"{fp32['varmixup_fp32']:.3f} | {fp32[BEST]:.3f} | {bf16[BEST]:.3f} | <= {GOALS[key]:.2f} | "
                     f"{_verdict(fp32[BEST], GOALS[key], True)} (fp32), {_verdict(bf16[BEST], GOALS[key], True)} (bf16) |")
    e32, e16 = epoch["fast_cifar_net/fp32"], epoch["fast_cifar_net/bf16"]
    best32 = max(e32["throughput_ratio_varmixup_workers"], e32["throughput_ratio_varmixup_main"])
    best16 = max(e16["throughput_ratio_varmixup_workers"], e16["throughput_ratio_varmixup_main"])
    lines.append(f"| `FastCifarNet` epoch throughput, 2 workers, VarMixup / torchvision MixUp (the better of "
                 f"workers and main process) | {BEFORE['epoch']:.2f} | | {best32:.3f} | {best16:.3f} | >= "
                 f"{GOALS['epoch']:.2f} | {_verdict(best32, GOALS['epoch'], False)} (fp32), "
                 f"{_verdict(best16, GOALS['epoch'], False)} (bf16) |")
    fp32_share = roof["decode_fp32"]["of_conv_roofline_same_dtype"]
    best = roof["decode_bf16_compiled"]["of_conv_roofline_same_dtype"]
    lines.append(f"| cached decode, share of the 3x3-conv roofline of its dtype | - | {100 * fp32_share:.0f}% | "
                 f"{100 * best:.0f}% (bf16) | | >= {100 * GOALS['roofline']:.0f}% | {_verdict(best, GOALS['roofline'], False)} |")
    return "\n".join(lines)


def roofline(result: dict[str, Any]) -> str:
    r = result["roofline"]
    lines = [f"Batch {r['batch']}; the decode counts {r['mflop_per_image_decode']:.1f} MFLOP per image "
             "(`torch.utils.flop_counter`, a multiply-add is 2 FLOPs).", "",
             "| kernel | ms / batch | GFLOP/s | share of the conv of its dtype | speed-up over fp32 eager | "
             "largest difference from fp32 |", "|---|---:|---:|---:|---:|---:|"]
    for name, row in r["rows"].items():
        label = name.replace("conv_", "3x3 conv, 128 channels, 16x16, ").replace("decode_", "VAE decode, ")
        label = label.replace("_compiled", ", compiled")
        share = f"{100 * row['of_conv_roofline_same_dtype']:.0f}%" if "of_conv_roofline_same_dtype" in row else ""
        speed = f"{row['speedup_over_fp32_eager']:.2f}x" if "speedup_over_fp32_eager" in row else ""
        diff = r["max_abs_diff_from_fp32"].get(name)
        lines.append(f"| {label} | {row['ms']:.1f} | {row['gflop_per_s']:.0f} | {share} | {speed} | "
                     + (f"{diff:.4f}" if diff is not None else "") + " |")
    first = r["first_call_s"]
    lines += ["", "First call of the compiled decoder (compiling for that shape and dtype): "
              + ", ".join(f"{first[k]:.1f} s in {'bf16' if 'bf16' in k else 'fp32'}" for k in first) + "."]
    return "\n".join(lines)


def generation(result: dict[str, Any]) -> str:
    g = result["cached_generation"]
    lines = [f"| `VarMixupCollate` on {g['batch']} cached posteriors, VAE in | images / s | speed-up over fp32 | "
             "largest difference from fp32 |", "|---|---:|---:|---:|"]
    for name, row in g["rows"].items():
        lines.append(f"| {SOURCES[name]} | {row['images_per_s']:,.0f} | {row['speedup_over_fp32']:.2f}x | "
                     f"{row['max_abs_diff_from_fp32']:.4f} |")
    return "\n".join(lines)


def steps(result: dict[str, Any]) -> str:
    lines = ["| classifier, precision | torchvision MixUp step (ms) | VarMixup fp32 / MixUp | bf16 / MixUp | "
             "bf16 compiled / MixUp |", "|---|---:|---:|---:|---:|"]
    for row in result["training_step"].values():
        r = row["ratio"]
        lines.append(f"| {NAMES[row['classifier']]}, {row['precision']} | {row['step_ms']['torchvision_mixup']:,.1f} | "
                     + " | ".join(f"{r[k]:.3f}" for k in SOURCES) + " |")
    return "\n".join(lines)


def epoch(result: dict[str, Any]) -> str:
    lines = ["| `FastCifarNet`, classifier precision | torchvision MixUp (images / s) | VarMixup in the workers' "
             "collate | VarMixup in the main process (`VarMixupLoader`) |", "|---|---:|---:|---:|"]
    for name, row in result["training_epoch"].items():
        lines.append(f"| {name.split('/')[1]} | {row['torchvision_mixup_images_per_s']:,.0f} | "
                     f"{row['varmixup_workers_images_per_s']:,.0f} ({row['throughput_ratio_varmixup_workers']:.3f}) | "
                     f"{row['varmixup_main_images_per_s']:,.0f} ({row['throughput_ratio_varmixup_main']:.3f}) |")
    return "\n".join(lines)


def readme_summary(result: dict[str, Any]) -> str:
    g, steps_ = result["cached_generation"]["rows"], result["training_step"]
    fast, small = steps_["fast_cifar_net/fp32"]["ratio"][BEST], steps_["small_cnn/fp32"]["ratio"][BEST]
    units = ", ".join(result["machine"]["cpu_bf16_units"]) or "no bf16 units"
    busy = ", measured on a busy machine: to be measured again" if _busy(result) else ""
    return (f"With the VAE in bf16 and `vae.compile_decoder()`, {g[BEST]['images_per_s']:,.0f} images/s from cached "
            f"latents ({g[BEST]['speedup_over_fp32']:.1f}x fp32); a step costs {fast:.2f}x torchvision's MixUp for "
            f"`FastCifarNet`, {small:.2f}x for SmallCNN ({result['machine']['cpus']} cores, {units}){busy}.")


BLOCKS = {"docs/benchmarks.md": {"perf:targets": targets, "perf:roofline": roofline, "perf:generation": generation,
                                 "perf:steps": steps, "perf:epoch": epoch},
          "README.md": {"perf:summary": readme_summary}}


def render(text: str, blocks: dict[str, Any], result: dict[str, Any], path: str) -> str:
    global _BUSY
    _BUSY = _busy(result)
    for name, make in blocks.items():
        pattern = re.compile(rf"(<!-- {name} -->\n)(.*?)(<!-- /{name} -->)", re.DOTALL)
        if not pattern.search(text):
            raise SystemExit(f"{path}: no <!-- {name} --> ... <!-- /{name} --> block")
        text = pattern.sub(lambda m: m.group(1) + make(result) + "\n" + m.group(3), text)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only compare; exit 1 if a block is stale")
    p.add_argument("--results", default=str(HERE / "results-perf.json"))
    p.add_argument("--root", default=str(REPO), help="the folder holding README.md and docs/")
    args = p.parse_args(argv)
    result = json.loads(Path(args.results).read_text())
    stale = []
    for rel, blocks in BLOCKS.items():
        path = Path(args.root) / rel
        old = path.read_text()
        new = render(old, blocks, result, rel)
        if new != old:
            stale.append(rel)
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(f"stale: {', '.join(stale)}; run python benchmarks/summary.py", file=sys.stderr)
        return 1
    print("up to date" if args.check else "wrote " + (", ".join(stale) or "nothing (up to date)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
