"""Training steps per second of the paper-size MSA (ResNet-50 + BERT-base, random init), fp32 against bf16.

Each precision runs in a fresh subprocess (Accelerate's precision is fixed per process, and a
fresh process gives a clean peak-memory reading), one after the other in the same invocation,
on the same random batch: forward with the three losses, backward, AdamW step, exactly as
``msa_hf_train`` does. Reports steps/s, seconds/step and peak memory (RSS high-water mark on
CPU, ``torch.cuda.max_memory_allocated`` on CUDA).

    python benchmarks/train_throughput.py                      # CPU, batch 32, 3 timed steps each
    python benchmarks/train_throughput.py --steps 200 --device cuda --output benchmarks/results/throughput-gpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path


def measure(precision: str, batch_size: int, steps: int, warmup: int, device: str) -> dict[str, float]:
    import torch
    from accelerate import Accelerator

    from msa_hf import MSAConfig, MSAModel

    accelerator = Accelerator(mixed_precision=precision, cpu=device == "cpu")
    torch.manual_seed(0)
    config = MSAConfig.from_preset("msa-resnet50-bert-base")
    model = MSAModel(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    generator = torch.Generator().manual_seed(0)
    batch = {
        "pixel_values": torch.randn(batch_size, 3, config.image_size, config.image_size, generator=generator),
        "input_ids": torch.randint(1000, 30000, (batch_size, config.text_max_length), generator=generator),
        "attention_mask": torch.ones(batch_size, config.text_max_length, dtype=torch.long),
    }
    batch = {k: v.to(accelerator.device) for k, v in batch.items()}

    def step() -> float:
        out = model(**batch, return_loss=True)
        accelerator.backward(out.loss)
        optimizer.step()
        optimizer.zero_grad()
        return float(out.loss.detach())

    for _ in range(warmup):
        step()
    if accelerator.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    losses = [step() for _ in range(steps)]
    if accelerator.device.type == "cuda":
        torch.cuda.synchronize()
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = time.perf_counter() - started
    return {
        "precision": precision,
        "steps": steps,
        "seconds_per_step": seconds / steps,
        "steps_per_second": steps / seconds,
        "peak_memory_mib": peak_mib,
        "final_loss": losses[-1],
        "device": str(accelerator.device),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per step (the paper's 32)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per precision")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precisions", nargs="+", default=["no", "bf16"], help="Accelerate mixed_precision values")
    parser.add_argument("--output", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args.batch_size, args.steps, args.warmup, args.device)))
        return 0
    rows = []
    for precision in args.precisions:
        command = [sys.executable, __file__, "--worker", precision, "--batch-size", str(args.batch_size)]
        command += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    print(f"MSA ResNet-50 + BERT-base, random init, batch {args.batch_size}, {args.steps} timed steps, {args.device}:")
    print("| precision | s/step | steps/s | peak MiB |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['precision']} | {row['seconds_per_step']:.2f} | {row['steps_per_second']:.3f} | {row['peak_memory_mib']:.0f} |"
        )
    if len(rows) == 2:
        print(
            f"speed ratio {rows[1]['precision']} / {rows[0]['precision']}: "
            f"{rows[1]['steps_per_second'] / rows[0]['steps_per_second']:.2f}×"
        )
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "command": " ".join(sys.argv),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
            "batch_size": args.batch_size,
            "results": rows,
        }
        args.output.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
