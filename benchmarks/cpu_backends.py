"""CPU benchmark: the built-in network on one batch of patches, by inference runtime (issue 14).

ONNX Runtime (geoseg's CPU backend, the baseline) against OpenVINO's CPU plugin with its latency and
throughput hints, each in f32 and, where the CPU has bf16 instructions, bf16, on the same exported
ONNX file, in one process, interleaved rounds; and how far their outputs are apart.

    python benchmarks/cpu_backends.py --batch 1 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.runbench.common import table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="csmask-6b-l1c")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    import onnxruntime as ort
    import openvino as ov

    from geoseg.engine.backends import onnx_file
    from geoseg.models import load_model

    loaded = load_model(args.model)
    card = loaded.card
    path = onnx_file(loaded.network.eval(), len(card.bands), card.tile_size)
    x = np.random.default_rng(0).normal(size=(args.batch, len(card.bands), card.tile_size, card.tile_size))
    x = x.astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    core = ov.Core()
    runners = {"ONNX Runtime (geoseg's CPU backend)": lambda: session.run(None, {"x": x})[0]}
    # OpenVINO's CPU plugin runs bf16 by default where the CPU has it (AMX, AVX512-BF16): both precisions
    precisions = ["f32"] + (["bf16"] if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES") else [])
    for hint in ("LATENCY", "THROUGHPUT"):
        for precision in precisions:
            settings = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": precision,
                        "INFERENCE_NUM_THREADS": args.threads}
            request = core.compile_model(str(path), "CPU", settings).create_infer_request()
            runners[f"OpenVINO {ov.__version__.split('-')[0]}, {hint.lower()} hint, {precision}"] = (
                lambda request=request: np.asarray(request.infer({0: x})[0]).copy())
    outputs = {name: run() for name, run in runners.items()}  # warm-up, and the outputs compared below
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    base = next(iter(runners))
    rows = []
    for name in runners:
        median = float(np.median(seconds[name]))
        diff = np.abs(outputs[name] - outputs[base])
        agree = (outputs[name].argmax(1) == outputs[base].argmax(1)).mean()
        rows.append([name, f"{median:.3f}", f"{median / float(np.median(seconds[base])):.2f}",
                     f"{diff.max():.1e}", f"{agree:.4%}"])
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    isa = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags) or "unknown"
    table(f"{args.model}, {args.batch} patches of {len(card.bands)}x{card.tile_size}x{card.tile_size}, "
          f"{args.threads} threads ({isa}), median of {args.rounds} interleaved rounds",
          ("runtime", "seconds", "x ONNX Runtime", "max |logit diff|", "argmax agree"), rows)


if __name__ == "__main__":
    main()
