"""``scripts/gpu_check.sh --smoke`` runs end to end on the CPU, so the GPU check is known to work before a lease."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_runs_on_cpu_and_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "GPU_CHECK_WORK": str(tmp_path / "work"), "DDBENCH_HOME": str(tmp_path / "home"),
           "OMP_NUM_THREADS": "1", "PYTHON": os.environ.get("PYTHON", "python")}  # fmt: skip
    env.pop("DDBENCH_GPU_DATA", None)
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(out), "--smoke"], env=env,
                          capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 9 and {"summary.json", "table.md", "stage_seconds.txt", "gpu-tests.txt"} <= set(files)
    # the Minimax latent-path bench ran at its CPU scale (diffusers and pytest-benchmark are in the test extra)
    (bench,) = json.loads((out / "latent-bench.json").read_text())["benchmarks"]
    info = bench["extra_info"]
    assert bench["name"].endswith("[tiny]") and info["scale"] == "tiny" and info["dtype"] == "torch.float32"
    assert info["finetune_steps_s"] > 0 and info["sample_img_s"] > 0 and info["gemm_tflops"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["teacher_epochs"] == 1 and summary["teacher_epochs_paper"] == 200
    for method in ("sre2l", "dwa"):
        m = summary["methods"][method]
        assert m["seconds_per_ipc"] > 0 and m["distill_peak_mem_mb"] > 0 and all(v > 0 for v in m["eval_images_per_s"])
        assert all(math.isfinite(v) for v in m["top1"]) and m["device"] == "cpu"
    table = (out / "table.md").read_text()
    assert "| dwa" in table and "| sre2l" in table and "dwa-cifar" in table
    stages = dict(line.split()[:2] for line in (out / "stage_seconds.txt").read_text().splitlines())
    assert {"install", "data", "gpu_tests", "run_sre2l", "run_dwa", "tables"} <= set(stages)
