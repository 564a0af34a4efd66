#!/usr/bin/env python
"""Time MSCMAT's batched formulation against the original's repeat-every-pair formulation.

What it measures, per batch size B (docs/method.md, section 4):

* ``batched``: ``msa_hf.MSCMAT`` as shipped — each text's keys/values projected once per
  scale, each image's query once, all B×B pairs scored with batched products.
* ``original``: :func:`original_mscmat`, the original code's formulation — repeat every
  image's query B times and the whole text batch B times (image i with text j is row
  ``i*B + j``), run ``nn.MultiheadAttention`` on B² rows (query length 1, key/value length L),
  then ``sigmoid(match((c + t_j) * q_i))`` reshaped to B×B. It uses the *same* module
  weights (``attentions[k]``, ``query_norm``, ``text_norm``, ``query_projections[k]``,
  ``match_heads[k]``). The text LayerNorm is applied once before repeating and the repeated
  text is shared by the four scales, which is the cheapest way to write the original, so the
  speed-up reported here is not inflated.

Both are timed on forward + backward (``scores.sum().backward()``, gradients on the inputs and
on every parameter) at the ResNet-50 / BERT-base widths: scale channels 256/512/1024/2048
(S = 4), d = 768, 12 heads, L = 30 text tokens. The scores of the two must agree
(``torch.allclose(atol=1e-5)``), as must the input and parameter gradients (relative to the
largest gradient entry, 1e-4); the script exits non-zero otherwise.

Every (formulation, B) runs in a fresh subprocess so that timings and memory do not
interfere. Peak memory:

* CPU: the process's resident-set high-water mark. After setup (module and inputs built) the
  high-water mark is reset (``/proc/self/clear_refs`` ← 5; Linux ≥ 4.0), the baseline is the
  current ``VmRSS``, and the peak is ``VmHWM`` after the warm-up and timed iterations; the
  reported number is peak − baseline, i.e. everything the forward + backward allocated on top
  of the weights and inputs (tensors plus allocator/oneDNN scratch). Where ``clear_refs`` is
  not writable the fallback is ``ru_maxrss`` growth above the setup's peak, which can only
  under-report.
* CUDA: ``torch.cuda.max_memory_allocated()`` minus ``memory_allocated()`` after setup.

Timing: ``--warmup`` untimed iterations, then the best (minimum) of ``--repeats`` timed ones.
The original at B² ≥ ``--heavy-rows`` pairs (default 4,096) runs once, with no warm-up. On
CPU, above ``--max-original-rows`` pairs (default 2,048) the original runs in blocks of
images, each block's forward followed by its backward: every pair is still computed, the time
and the check cover the whole batch and the gradients are exactly the full backward's, but the
peak memory is one block's, so it is reported as a lower bound. (The original holds about
1.5 MiB per pair, linear in B²: the unblocked original at B = 128 would need about 24 GiB.)
On CPU each worker's address space is capped (``RLIMIT_AS``) at what the machine has
available, so an oversized run fails with an allocation error, reported in the table, instead
of waking the kernel's OOM killer.

Run time is dominated by the original: on 2 idle CPU cores the default run takes about
6 minutes, ~3.5 of them the B = 128 original (one forward + backward over 16,384 pairs);
``--sizes 8 32`` takes under 2 minutes. The 1-minute load average is printed first.

Usage::

    python benchmarks/mscmat.py                          # B = 8, 32, 128 on CPU
    python benchmarks/mscmat.py --sizes 8 32 --repeats 5
    python benchmarks/mscmat.py --device cuda            # if a GPU is present
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

SCALE_CHANNELS = [256, 512, 1024, 2048]  # ResNet-50 stages 1-4
HIDDEN = 768  # BERT-base
HEADS = 12
TEXT_LENGTH = 30  # 31 tokens, the first ([CLS]) is not attended
SCORE_ATOL = 1e-5
GRAD_RTOL = 1e-4


def original_mscmat(mscmat, scale_features, text_tokens, text_global):
    """The original's formulation: ordinary attention over B_i·B_t repeated pairs.

    Row ``i * B_t + j`` pairs image ``i`` with text ``j``. Uses ``mscmat``'s own modules, no
    key padding mask (the original's default), and returns ``S×B_i×B_t`` scores like
    ``mscmat(...)``.
    """
    num_texts = text_tokens.shape[0]
    # LN_t once, then the whole text batch repeated B_i times, shared by every scale.
    num_images = scale_features[0].shape[0]
    tokens = mscmat.text_norm(text_tokens).repeat(num_images, 1, 1)  # (B_i·B_t)×L×d
    globals_ = text_global.repeat(num_images, 1)  # (B_i·B_t)×d
    scores = []
    for features, project, attention, match in zip(
        scale_features, mscmat.query_projections, mscmat.attentions, mscmat.match_heads
    ):
        query = project(features).repeat_interleave(num_texts, dim=0)  # (B_i·B_t)×d, before its LN
        attended, _ = attention(mscmat.query_norm(query)[:, None], tokens, tokens, need_weights=False)
        score = torch.sigmoid(match((attended[:, 0] + globals_) * query))
        scores.append(score.view(num_images, num_texts))
    return torch.stack(scores)


def batched_mscmat(mscmat, scale_features, text_tokens, text_global):
    return mscmat(scale_features, text_tokens, text_global)


FORMULATIONS = {"batched": batched_mscmat, "original": original_mscmat}


# --- worker: one (formulation, B) in its own process -------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _setup(batch: int, device: torch.device, seed: int):
    from msa_hf import MSCMAT

    torch.manual_seed(seed)
    mscmat = MSCMAT(SCALE_CHANNELS, HIDDEN, HEADS).to(device).train()
    generator = torch.Generator().manual_seed(seed + batch)
    scale_features = [
        torch.randn(batch, channels, generator=generator).to(device).requires_grad_() for channels in SCALE_CHANNELS
    ]
    text_tokens = torch.randn(batch, TEXT_LENGTH, HIDDEN, generator=generator).to(device).requires_grad_()
    text_global = F.normalize(torch.randn(batch, HIDDEN, generator=generator), dim=-1).to(device).requires_grad_()
    return mscmat, scale_features, text_tokens, text_global


def _step(fn, mscmat, inputs, block: int | None = None):
    """One forward + ``scores.sum().backward()``; returns the detached scores.

    With ``block``, images are processed ``block`` at a time, each block's forward followed by
    its backward. Every pair is still computed once and the gradients accumulate to exactly
    the full backward's (the sum of scores is additive over blocks); only the peak memory is
    that of one block.
    """
    for tensor in list(mscmat.parameters()) + [inputs[1], inputs[2], *inputs[0]]:
        tensor.grad = None
    scale_features, text_tokens, text_global = inputs
    num_images = scale_features[0].shape[0]
    block = block or num_images
    blocks = []
    for start in range(0, num_images, block):
        scores = fn(mscmat, [f[start : start + block] for f in scale_features], text_tokens, text_global)
        scores.sum().backward()
        blocks.append(scores.detach())
    return torch.cat(blocks, dim=1)


def _gradients(mscmat, inputs):
    grads = {f"input.scale_features[{k}]": f.grad.clone() for k, f in enumerate(inputs[0])}
    grads["input.text_tokens"] = inputs[1].grad.clone()
    grads["input.text_global"] = inputs[2].grad.clone()
    grads.update({name: p.grad.clone() for name, p in mscmat.named_parameters()})
    return grads


def worker(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    batch, formulation = args.worker_batch, args.worker_formulation
    fn = FORMULATIONS[formulation]
    heavy = formulation == "original" and batch * batch >= args.heavy_rows
    warmup, repeats = (0, 1) if heavy else (args.warmup, args.repeats)
    block = None
    if formulation == "original" and batch * batch > args.max_original_rows:
        block = max(1, args.max_original_rows // batch)
    mscmat, *inputs = _setup(batch, device, args.seed)
    result = {"batch": batch, "formulation": formulation, "warmup": warmup, "repeats": repeats, "block": block}

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        result["memory_method"] = "torch.cuda.max_memory_allocated() - memory_allocated() after setup"
    elif _reset_peak_rss() and _status_kib("VmHWM") is not None:
        base = _status_kib("VmRSS") * 1024
        result["memory_method"] = "VmHWM - VmRSS after setup (HWM reset via /proc/self/clear_refs)"
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result["memory_method"] = "ru_maxrss growth above setup (lower bound)"

    times = []
    try:
        for iteration in range(warmup + repeats):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            scores = _step(fn, mscmat, inputs, block)
            if cuda:
                torch.cuda.synchronize()
            if iteration >= warmup:
                times.append(time.perf_counter() - start)
    except (RuntimeError, MemoryError) as error:  # CPU allocation failure under RLIMIT_AS, CUDA OOM
        result["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
        return result

    if cuda:
        peak = torch.cuda.max_memory_allocated()
    elif result["memory_method"].startswith("VmHWM"):
        peak = _status_kib("VmHWM") * 1024
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result["ms"] = min(times) * 1000  # best of: least disturbed by other processes
    result["times_ms"] = [t * 1000 for t in times]
    result["peak_mib"] = max(peak - base, 0) / 2**20

    if formulation == "original":  # compare against the batched formulation, after measuring
        original_grads = _gradients(mscmat, inputs)
        batched = _step(batched_mscmat, mscmat, inputs)
        batched_grads = _gradients(mscmat, inputs)
        result["allclose"] = bool(torch.allclose(batched, scores, atol=SCORE_ATOL))
        result["max_abs_diff"] = (batched - scores).abs().max().item()
        worst_name, worst = None, 0.0
        for name, reference in original_grads.items():
            scale = reference.abs().max().clamp_min(1e-12)
            relative = ((batched_grads[name] - reference).abs().max() / scale).item()
            if relative >= worst:
                worst_name, worst = name, relative
        result["max_rel_grad_diff"] = worst
        result["worst_grad"] = worst_name
    return result


# --- driver ----------------------------------------------------------------------------------


def run_worker(args: argparse.Namespace, batch: int, formulation: str) -> dict:
    command = [
        sys.executable, os.path.abspath(__file__),
        "--device", args.device, "--seed", str(args.seed),
        "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--heavy-rows", str(args.heavy_rows),
        "--max-original-rows", str(args.max_original_rows),
        "--worker-batch", str(batch), "--worker-formulation", formulation,
    ] + (["--threads", str(args.threads)] if args.threads else [])  # fmt: skip
    start = time.perf_counter()
    process = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    lines = [line for line in process.stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        tail = (process.stderr or process.stdout).strip().splitlines()[-3:]
        return {"batch": batch, "formulation": formulation, "wall_s": wall,
                "error": f"worker exited with {process.returncode}: {' | '.join(tail)}"}  # fmt: skip
    result = json.loads(lines[-1])
    result["wall_s"] = wall
    return result


def _fmt(value, spec: str, missing: str = "—") -> str:
    return missing if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time MSCMAT (batched) against the original repeat-every-pair formulation, forward + "
        "backward, at ResNet-50/BERT-base widths (d 768, L 30, S 4); check both give the same scores.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 128], help="batch sizes B (B×B pairs)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed forward+backward iterations (the fastest is reported)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations before timing")
    parser.add_argument(
        "--heavy-rows", type=int, default=4096,
        help="the original at B*B >= this many pairs runs once with no warm-up",
    )  # fmt: skip
    parser.add_argument(
        "--max-original-rows", type=int, default=None,
        help="above this many pairs the original runs in blocks of images, each block's forward followed by "
        "its backward (same work and gradients; peak memory is one block's); default 2048 on CPU "
        "(~3 GiB per block), unlimited on CUDA",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device (cuda only if available)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and inputs")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads in each worker (unset: torch's own choice)"
    )
    parser.add_argument("--json", default=None, help="also write the raw results to this file")
    parser.add_argument("--worker-batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-formulation", choices=sorted(FORMULATIONS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.max_original_rows is None:
        args.max_original_rows = 2048 if args.device == "cpu" else 2**62
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)

    if args.worker_batch is not None:
        if args.device == "cpu":  # fail an oversized run with an allocation error, not the OOM killer
            available = _available_bytes()
            size = _status_kib("VmSize")
            if available is not None and size is not None:
                limit = size * 1024 + int(available * 0.9)
                soft, hard = resource.getrlimit(resource.RLIMIT_AS)
                for bound in (soft, hard):
                    if bound != resource.RLIM_INFINITY:
                        limit = min(limit, bound)
                resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        print(json.dumps(worker(args)), flush=True)
        return 0

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if min(args.sizes) < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("sizes and --repeats must be positive, --warmup non-negative")

    threads = args.threads or torch.get_num_threads()
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {threads} threads"
    print(
        f"MSCMAT forward+backward: S={len(SCALE_CHANNELS)} scales {SCALE_CHANNELS}, d={HIDDEN}, {HEADS} heads, "
        f"L={TEXT_LENGTH}; torch {torch.__version__}; {device_name}; seed {args.seed}"
    )
    blocks_note = f"; above {args.max_original_rows} pairs: in image blocks" if args.max_original_rows < 2**62 else ""
    print(
        f"timing: best of {args.repeats} after {args.warmup} warm-up (original at B*B >= {args.heavy_rows}: "
        f"1 run, no warm-up{blocks_note}); each (formulation, B) in a fresh subprocess",
        flush=True,
    )
    if args.device == "cpu" and hasattr(os, "getloadavg"):
        load = os.getloadavg()[0]
        print(
            f"1-min load average before start: {load:.2f} on {os.cpu_count()} CPUs (timings assume an otherwise "
            "idle machine; other processes inflate them, the batched formulation's most)",
            flush=True,
        )

    start_all = time.perf_counter()
    rows, failed, method = [], False, None
    for batch in args.sizes:
        batched = run_worker(args, batch, "batched")
        original = run_worker(args, batch, "original")
        method = method or batched.get("memory_method") or original.get("memory_method")
        rows.append((batch, batched, original))
        for result in (batched, original):
            if "error" in result:
                failed = True
                print(f"  B={batch} {result['formulation']}: FAILED: {result['error']}", file=sys.stderr)
        print(
            f"  B={batch}: batched {_fmt(batched.get('ms'), '.1f')} ms, original {_fmt(original.get('ms'), '.1f')} ms "
            f"(wall {batched['wall_s']:.0f} s + {original['wall_s']:.0f} s)",
            flush=True,
        )

    header = (
        f"{'B':>5} {'batched ms':>11} {'original ms':>12} {'speed-up':>9} {'batched MiB':>12} "
        f"{'original MiB':>13} {'mem ratio':>10} {'max |diff|':>11} {'rel grad diff':>14}  original runs"
    )
    print()
    print(header)
    print("-" * len(header))
    blocked = False
    for batch, batched, original in rows:
        b_ms, o_ms = batched.get("ms"), original.get("ms")
        b_mib, o_mib = batched.get("peak_mib"), original.get("peak_mib")
        speed = o_ms / b_ms if b_ms and o_ms else None
        ratio = o_mib / b_mib if b_mib and o_mib else None
        bound = ""
        if "error" in original:
            runs = "failed (see above)"
        else:
            runs = f"{original['repeats']} (+{original['warmup']} warm-up)"
            if original.get("block"):
                blocked, bound = True, "≥"
                count = -(-batch // original["block"])
                runs += f", {count} blocks of {original['block']} images*"
        o_cell = "—" if o_mib is None else f"{bound}{o_mib:.1f}"
        ratio_cell = "—" if ratio is None else f"{bound}{ratio:.1f}×"
        speed_cell = "—" if speed is None else f"{speed:.1f}×"
        diff, grad_diff = _fmt(original.get("max_abs_diff"), ".2e"), _fmt(original.get("max_rel_grad_diff"), ".2e")
        print(
            f"{batch:>5} {_fmt(b_ms, '.1f'):>11} {_fmt(o_ms, '.1f'):>12} {speed_cell:>9} {_fmt(b_mib, '.1f'):>12} "
            f"{o_cell:>13} {ratio_cell:>10} {diff:>11} {grad_diff:>14}  {runs}"
        )
    print()
    if blocked:
        print(
            "* blocked: all B² pairs computed (time and check are for the full batch), but each block's backward "
            "runs before the next block's forward, so the original's peak memory is one block's: a lower bound "
            "(the unblocked original holds every block's activations at once, ≈ blocks × this)."
        )
    print(f"peak memory: {method}")
    print(
        f"check: scores torch.allclose(atol={SCORE_ATOL:g}); gradients on inputs and parameters within "
        f"{GRAD_RTOL:g} of each tensor's largest entry"
    )
    for batch, _, original in rows:
        if original.get("allclose") is False:
            failed = True
            print(f"MISMATCH at B={batch}: max |diff| {original['max_abs_diff']:.3e}", file=sys.stderr)
        if original.get("max_rel_grad_diff", 0.0) > GRAD_RTOL:
            failed = True
            worst = f"{original['worst_grad']} rel diff {original['max_rel_grad_diff']:.3e}"
            print(f"GRADIENT MISMATCH at B={batch}: {worst}", file=sys.stderr)
    print(f"total wall time {time.perf_counter() - start_all:.0f} s; {'FAILED' if failed else 'OK'}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump([{"batch": b, "batched": x, "original": y} for b, x, y in rows], handle, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
