#!/usr/bin/env bash
# The prepared GPU check: one command that spends a short GPU lease on the numbers only a GPU can give.
#
#   bash scripts/gpu_check.sh OUTDIR [--smoke] [--data DIR] [--device cuda]
#
# Steps (each stage's wall time goes to OUTDIR/summary.json):
#   1. install the project without dependencies (the GPU image already has torch, torchvision, timm, pandas, rich,
#      filelock, scikit-learn and pytest) and record nvidia-smi / torch versions;
#   2. unpack CIFAR-10 (CIFAR-10-images-{train,test}.zip, 62 MB, copied beside the repo: --data DIR, or
#      $DDBENCH_GPU_DATA, or .gpu-data/, shared/data/cifar10, ../shared/data/cifar10);
#   3. pytest -m gpu (addopts cleared: the image may lack pytest-benchmark, whose --benchmark-skip tox.ini passes),
#      then the Minimax latent-path bench (tests/benchmarks/test_bench_minimax_latent.py: DiT-XL/2 + SD VAE, random
#      weights, bf16; the 32-px tiny scale on --smoke) into latent-bench.json. It needs diffusers and
#      pytest-benchmark: `bash scripts/gpu_deps.sh` puts their wheels in .gpu-deps/, carried to the device and
#      installed offline here for what the image lacks; without them the bench is skipped and the log says so;
#   4. CIFAR-10 ipc 10, SRe2L and DWA at the paper preset (recover 1000 iterations, paper rho/K/lambda), teacher =
#      the paper CIFAR recipe with its epochs cut to $TEACHER_EPOCHS (default 30, stated in the output), evaluated under
#      dwa-cifar (400 epochs, online teacher, mixup, KL T=30) on ResNet-18 with 3 seeds, AMP and channels-last on;
#   5. the table, seconds per ipc, peak memory and evaluation images/s into OUTDIR.
# --smoke runs the same steps at toy sizes on CPU (tiny fake data if none is given, ipc 2, 2 recover iterations, no AMP)
# so that the default test suite knows
# the script works before any GPU time is spent on it.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

OUT=""; SMOKE=0; DATA="${DDBENCH_GPU_DATA:-}"; DEVICE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --data) DATA="$2"; shift ;;
    --device) DEVICE="$2"; shift ;;
    -h|--help) sed -n 2,18p "$0"; exit 0 ;;
    *) if [ -z "$OUT" ]; then OUT="$1"; else echo "gpu_check: unexpected argument $1" >&2; exit 2; fi ;;
  esac
  shift
done
[ -n "$OUT" ] || { echo "usage: bash scripts/gpu_check.sh OUTDIR [--smoke] [--data DIR] [--device cuda]" >&2; exit 2; }
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
# OUT receives nine small files only (what a device lease sends back); caches, data and recipes live in WORK
WORK=${GPU_CHECK_WORK:-${TMPDIR:-/tmp}/ddbench-gpu-check}
mkdir -p "$WORK"
export DDBENCH_HOME="${DDBENCH_HOME:-$WORK/home}"
PY=${PYTHON:-python}
if [ "$SMOKE" = 1 ]; then
  # AMP stays off on the CPU smoke run: bf16 autocast without AVX512-BF16/AMX is ~50x slower (measured: a 2-epoch
  # ResNet-18 evaluation took 96 s); the bf16 path itself is covered by tests/test_evaluate.py and tests/test_gpu.py
  DEVICE=${DEVICE:-cpu}; TEACHER_EPOCHS=${TEACHER_EPOCHS:-1}; SEEDS=0; PRESET=paper; AMP=(); IPC=2
  SETS=(--set iterations=2 --set class_batch=10); EVAL_SET=(--protocol "$WORK/dwa-cifar-smoke.toml"); EVAL_EPOCHS=2
else
  DEVICE=${DEVICE:-cuda}; TEACHER_EPOCHS=${TEACHER_EPOCHS:-30}; SEEDS=0,1,2; PRESET=paper; AMP=(--amp); IPC=10
  SETS=(); EVAL_SET=(--protocol dwa-cifar); EVAL_EPOCHS=400
fi
log() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$OUT/log.txt"; }
stage_start=$(date +%s%N)
declare -A STAGE
stage() { local now; now=$(date +%s%N); STAGE[$1]=$(( (now - stage_start) / 1000000 )); stage_start=$now; }

log "1/5 install and environment"
if ! $PY -c "import ddbench" 2>/dev/null || [ "$($PY -c 'import ddbench,os;print(os.path.dirname(ddbench.__file__))')" != "$REPO/ddbench" ]; then
  $PY -m pip install -q --no-deps --no-build-isolation -e . >>"$OUT/log.txt" 2>&1
fi
for group in "$REPO"/.gpu-deps/*/; do  # offline wheels for what the image cannot import (scripts/gpu_deps.sh)
  [ -d "$group" ] || continue
  mod=$(basename "$group")
  if ! $PY -c "import $mod" 2>/dev/null; then
    $PY -m pip install -q --no-index --no-deps --target "$WORK/deps/$mod" "$group"*.whl >>"$OUT/log.txt" 2>&1
    export PYTHONPATH="$WORK/deps/$mod${PYTHONPATH:+:$PYTHONPATH}"
    log "installed $mod from .gpu-deps (offline)"
  fi
done
{ nvidia-smi 2>/dev/null || echo "no nvidia-smi"; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"; } >"$OUT/environment.txt" 2>&1
stage install

log "2/5 data"
ROOT="$WORK/data"
mkdir -p "$ROOT"
if [ -z "$DATA" ] && [ "$SMOKE" = 0 ]; then  # the smoke run uses tiny fake data unless --data is given
  for cand in .gpu-data shared/data/cifar10 ../shared/data/cifar10; do
    if [ -f "$cand/CIFAR-10-images-train.zip" ]; then DATA=$cand; break; fi
  done
fi
if [ -n "$DATA" ] && [ -f "$DATA/CIFAR-10-images-train.zip" ]; then
  $PY - "$DATA" "$ROOT/cifar10" <<'PYEOF'
import sys, zipfile
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for split in ("train", "test"):
    with zipfile.ZipFile(src / f"CIFAR-10-images-{split}.zip") as z:
        z.extractall(dst)
# the zips hold CIFAR-10-images/{train,test}/<class>/ or {train,test}/<class>/: point at the folder that has train/
root = next(p.parent for p in dst.rglob("train") if p.is_dir())
print(root)
PYEOF
elif [ "$SMOKE" = 1 ]; then
  $PY - "$ROOT/cifar10" <<'PYEOF'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
from ddbench.data.catalog import CIFAR10_CLASSES
root = Path(sys.argv[1])
rng = np.random.default_rng(0)
for split, n in (("train", 12), ("test", 4)):
    for c, name in enumerate(CIFAR10_CLASSES):
        d = root / split / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            base = np.full((32, 32, 3), 20 * c, np.uint8)
            Image.fromarray(base + rng.integers(0, 40, (32, 32, 3), dtype=np.uint8)).save(d / f"{i:04d}.png")
print(root)
PYEOF
else
  echo "gpu_check: CIFAR-10 zips not found (pass --data DIR holding CIFAR-10-images-{train,test}.zip)" >&2; exit 2
fi
CIFAR_ROOT=$(find "$ROOT/cifar10" -maxdepth 3 -type d -name train -printf '%h\n' | head -1)
stage data

log "3/5 pytest -m gpu"
set +e
$PY -m pytest -q -o addopts="" -m "gpu and not bench" -p no:cacheprovider --junitxml="$OUT/gpu-tests.xml" \
  >"$OUT/gpu-tests.txt" 2>&1
GPU_TESTS=$?
tail -3 "$OUT/gpu-tests.txt" | tee -a "$OUT/log.txt"
if $PY -c "import diffusers, pytest_benchmark" 2>/dev/null; then
  if [ "$SMOKE" = 1 ]; then SCALE=tiny; else SCALE=xl; fi
  $PY -m pytest -q -o addopts="" -m bench -k "$SCALE" -p no:cacheprovider --benchmark-only \
    --benchmark-json="$OUT/latent-bench.json" tests/benchmarks/test_bench_minimax_latent.py >>"$OUT/gpu-tests.txt" 2>&1
  LATENT=$?
  tail -1 "$OUT/gpu-tests.txt" | tee -a "$OUT/log.txt"
  [ -f "$OUT/latent-bench.json" ] && $PY - "$OUT/latent-bench.json" <<'PYEOF' | tee -a "$OUT/log.txt"
import json, sys
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    i = b["extra_info"]
    print(f"latent {i['scale']} ({i['device']}, {i['dtype']}): fine-tune {i['finetune_steps_s']:.2f} steps/s "
          f"({i['finetune_img_s']:.1f} img/s, {i['finetune_tflops']:.2f} TFLOP/s), sampling {i['sample_img_s']:.2f} "
          f"img/s ({i['sample_tflops']:.2f} TFLOP/s), GEMM {i['gemm_tflops']:.2f} TFLOP/s, peak {i['peak_mem_gb']:.1f} GB")
PYEOF
  [ "$LATENT" = 0 ] || GPU_TESTS=$LATENT
else
  log "latent bench skipped: diffusers or pytest-benchmark missing (bash scripts/gpu_deps.sh, then carry .gpu-deps)"
fi
set -e
stage gpu_tests

log "4/5 CIFAR-10 ipc 10: SRe2L and DWA, paper preset, teacher epochs cut to $TEACHER_EPOCHS (paper: 200)"
RECIPE="$WORK/cifar-teacher-${TEACHER_EPOCHS}ep.toml"
sed -e "s/^epochs = 200$/epochs = $TEACHER_EPOCHS/" -e "s/^version = 1$/version = 1  # gpu_check: epochs cut from 200/" \
  ddbench/protocols/teacher/cifar.toml >"$RECIPE"
if [ "$SMOKE" = 1 ]; then
  sed -e 's/^epochs = 400$/epochs = 2/' -e 's/^test_every = 10$/test_every = 0/' ddbench/protocols/dwa-cifar.toml >"$WORK/dwa-cifar-smoke.toml"
fi
COMMON=(--dataset cifar10 --ipc "$IPC" --preset "$PRESET" --device "$DEVICE" --data-root "$CIFAR_ROOT" --archs resnet18
        --seeds "$SEEDS" "${AMP[@]}" --channels-last --no-baseline --set "teacher_recipe=$RECIPE" "${EVAL_SET[@]}" "${SETS[@]}")
for method in sre2l dwa; do
  $PY -m ddbench -v run --method "$method" "${COMMON[@]}" 2>>"$OUT/log.txt" | tee -a "$OUT/runs.txt"
  stage "run_$method"
done

log "5/5 tables and numbers"
$PY -m ddbench -q table --dataset cifar10 | tee "$OUT/table.md"
$PY - "$OUT" "$TEACHER_EPOCHS" "$GPU_TESTS" "$EVAL_EPOCHS" <<'PYEOF'
import json, sys
from pathlib import Path
from ddbench.store import Store
out, epochs, gpu_tests, eval_epochs = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
store = Store(read_only=True)
runs = store.runs(dataset="cifar10")
evals = store.evaluations(dataset="cifar10")
teachers = store.teachers(dataset="cifar10")
summary = {"teacher_epochs": epochs, "teacher_epochs_paper": 200, "gpu_tests_exit": gpu_tests, "methods": {}}
for r in runs.to_dict("records"):
    rows = evals[evals["run_id"] == r["run_id"]]
    extra = [json.loads(e) for e in rows["extra_json"]]
    per_student = [w / max(1, x.get("lockstep", 1)) for w, x in zip(rows["wall_time_s"], extra)]
    images = 10 * r["ipc"]  # CIFAR-10: 10 classes
    summary["methods"][r["method"]] = {
        "run_id": r["run_id"],
        "distill_wall_s": r["wall_time_s"],
        "seconds_per_ipc": r["wall_time_s"] / r["ipc"],
        "distill_peak_mem_mb": r["peak_mem_mb"],
        "top1": rows["top1"].tolist(),
        "top1_mean": float(rows["top1"].mean()),
        "top1_std": float(rows["top1"].std(ddof=0)),
        "eval_wall_s_per_student": per_student,
        "eval_images_per_s": [images * eval_epochs / w for w in per_student if w],
        "eval_peak_mem_mb": rows["peak_mem_mb"].tolist(),
        "device": r["device"],
    }
summary["teachers"] = teachers[["teacher_id", "test_top1"]].to_dict("records")
summary["eval_epochs"] = eval_epochs
summary["paper"] = {"dwa": "32.6±0.4", "sre2l": "27.2±0.4", "seconds_per_ipc_a100": {"dwa": 116.6, "sre2l": 125.1}}
(out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
print(json.dumps(summary["methods"], indent=1, default=str))
PYEOF
stage tables
{ for k in "${!STAGE[@]}"; do echo "$k ${STAGE[$k]} ms"; done; } >"$OUT/stage_seconds.txt"
log "done: $(tr '\n' ' ' <"$OUT/stage_seconds.txt")"
