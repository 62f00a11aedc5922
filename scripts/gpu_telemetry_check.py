#!/usr/bin/env python
"""Check GPU telemetry against a known load: idle, then a PyTorch bf16 matmul loop.

For a machine with an NVIDIA GPU and PyTorch (e.g. the lent H100). The Sampler runs at
100 ms throughout; phases: "idle" (no CUDA context yet), "ramp" (context, allocation, first
matmuls), "load" (matmuls only). Writes samples.jsonl and summary.json to --out and prints
PASS/FAIL for: util > 50% under load, power above idle, positive energy delta over the load,
VRAM rise. Exit code: 0 all pass, 1 a check failed, 2 nothing to test (no torch/CUDA/NVML).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

try:
    import sentinel_exp  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

try:
    from sentinel_exp.telemetry import GpuProbe, Sample, Sampler, gpu_energy, summarize_telemetry
except ImportError as exc:  # psutil missing on a bare image
    print(f"cannot import sentinel_exp.telemetry ({exc}); pip install psutil nvidia-ml-py")
    sys.exit(2)


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def skip(out: Path, reason: str) -> int:
    print(f"SKIPPED: {reason}")
    write_json(out / "summary.json", {"status": "skipped", "reason": reason})
    return 2


def only_device(samples: list[Sample], index: int) -> list[Sample]:
    # Judge the GPU that carries the load; others would dilute util/power on multi-GPU hosts.
    return [dataclasses.replace(s, gpus=tuple(g for g in s.gpus if g.index == index)) for s in samples]


def matmul_load(torch: Any, device: str, n: int, seconds: float, sampler: Sampler) -> dict[str, float]:
    sampler.mark_phase("ramp")
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    c = torch.empty_like(a)
    for _ in range(3):
        torch.matmul(a, b, out=c)
    torch.cuda.synchronize()
    sampler.mark_phase("load")
    t0 = time.perf_counter()
    done = 0
    while time.perf_counter() - t0 < seconds:
        for _ in range(20):  # ~40 ms per batch on an H100 at n=8192
            torch.matmul(a, b, out=c)
        torch.cuda.synchronize()
        done += 20
    elapsed = time.perf_counter() - t0
    sampler.mark_phase("done")
    del a, b, c
    return {"matmuls": done, "seconds": elapsed, "tflops": 2 * n**3 * done / elapsed / 1e12}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "./gpu_check")
    ap.add_argument("--idle-s", type=float, default=4.0)
    ap.add_argument("--load-s", type=float, default=20.0)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--size", type=int, default=8192, help="square matmul size")
    ap.add_argument("--device", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    try:
        import torch  # lazy: only this script needs it
    except ImportError as exc:
        return skip(out, f"PyTorch is not installed ({exc}); this check needs torch with CUDA")
    if not torch.cuda.is_available():
        return skip(out, f"CUDA is not available to PyTorch {torch.__version__} (no GPU/driver?)")

    probe = GpuProbe()
    if not probe.open():
        return skip(out, f"NVML telemetry unavailable: {probe.reason}")
    for d in probe.devices:
        print(f"gpu{d.index}: {d.name}, {d.memory_total_mb:.0f} MB, uuid {d.uuid}")
    print(f"driver {probe.driver_version}, CUDA driver {probe.cuda_driver_version}, torch {torch.__version__}")

    sampler = Sampler(interval_s=args.interval, gpu_probe=probe)
    sampler.start()
    sampler.mark_phase("idle")
    try:
        time.sleep(args.idle_s)
        work = matmul_load(torch, f"cuda:{args.device}", args.size, args.load_s, sampler)
        time.sleep(2 * args.interval)  # one or two "done" samples
    finally:
        samples = sampler.stop()
        probe.close()

    with (out / "samples.jsonl").open("w") as f:
        for s in samples:
            f.write(json.dumps(s.to_dict()) + "\n")

    dev = only_device(samples, args.device)
    idle = summarize_telemetry(dev, phase="idle")
    load = summarize_telemetry(dev, phase="load")
    energy = gpu_energy(dev, "load")
    load_samples = [s for s in dev if s.phase == "load"]
    load_s = load_samples[-1].mono_time - load_samples[0].mono_time if len(load_samples) > 1 else 0.0
    idle_vram = [g.mem_used_mb for s in dev if s.phase == "idle" for g in s.gpus if g.mem_used_mb is not None]
    vram_before = min(idle_vram) if idle_vram else None
    vram_during = load.get("gpu_mem_mb_max")
    reasons = sorted({g.throttle_reasons for s in load_samples for g in s.gpus if g.throttle_reasons is not None})

    def g(d: dict[str, float], k: str) -> float:
        return d.get(k, float("nan"))

    power_idle, power_load = g(idle, "gpu_power_w_mean"), g(load, "gpu_power_w_mean")
    ej = energy.joules if energy.joules is not None else float("nan")
    checks = {
        "util_over_50pct_under_load": g(load, "gpu_util_pct_mean") > 50,
        "power_above_idle": power_load > 1.1 * power_idle,
        "energy_delta_positive": ej > 0,
        "vram_rises_under_load": (
            vram_before is not None and vram_during is not None and vram_during - vram_before > 100
        ),
    }
    st = sampler.stats()
    print(
        f"samples: {len(samples)} ({len(load_samples)} under load over {load_s:.1f} s); "
        f"per sample mean {st['sample_wall_ms_mean']:.1f} ms, "
        f"max {st['sample_wall_ms_max']:.1f} ms; "
        f"sampler CPU {100 * sampler.overhead_core_fraction:.2f}% of one core"
    )
    print(
        f"load: {work['matmuls']} bf16 matmuls of {args.size}^2 in {work['seconds']:.1f} s "
        f"= {work['tflops']:.0f} TFLOP/s"
    )
    print(f"util mean under load : {g(load, 'gpu_util_pct_mean'):.1f}% (max {g(load, 'gpu_util_pct_max'):.0f}%)")
    print(f"power idle vs load   : {power_idle:.1f} W vs {power_load:.1f} W")
    print(f"energy over load     : {ej:.1f} J by {energy.method}; power x time = {power_load * load_s:.1f} J")
    print(f"VRAM before / during : {vram_before} MB / {vram_during} MB")
    print(
        f"temp max {g(load, 'gpu_temp_c_max'):.0f} C, "
        f"SM clock mean {g(load, 'gpu_sm_clock_mhz_mean'):.0f} MHz, "
        f"clock-event reasons seen {[hex(r) for r in reasons]}"
    )
    for note in sampler.notes:
        print(f"note: {note}")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")

    write_json(
        out / "summary.json",
        {
            "status": "pass" if all(checks.values()) else "fail",
            "checks": checks,
            "idle": idle,
            "load": load,
            "energy_j": energy.joules,
            "energy_method": energy.method,
            "load_window_s": load_s,
            "vram_before_mb": vram_before,
            "vram_during_mb": vram_during,
            "throttle_reasons": reasons,
            "work": work,
            "sampler": st,
            "notes": sampler.notes,
            "devices": [dataclasses.asdict(d) for d in probe.devices],
            "driver": probe.driver_version,
            "cuda_driver": probe.cuda_driver_version,
        },
    )
    print(f"wrote {out / 'samples.jsonl'} and {out / 'summary.json'}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
