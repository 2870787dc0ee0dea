#!/usr/bin/env bash
# The GPU check: one command on a bare GPU machine without network, started from the repository root.
#
#   bash benchmarks/prepare_gpu_wheels.sh     # first, on a machine with PyPI: fills gpu_wheels/
#   bash benchmarks/gpu_check.sh              # then, on the GPU machine, with gpu_wheels/ beside the code
#
# Steps: record the environment; install what the machine lacks (avalanche-lib and the packages it imports)
# from gpu_wheels/ with --no-deps into a separate folder, so the machine's torch is never replaced; check the
# imports; run the CUDA tests (tests/test_cuda.py; on a GPU none may be skipped; they include which SDPA backend
# plain and LPA attention take in bf16: FlashAttention expected for both); time and memory of the attention layers
# against plain attention at 64, 196 and 576 tokens (fp32 and bf16, judged against issue 28's goals in
# summary.txt), the whole model at the CIFAR and ImageNet shapes; one short end-to-end training run per precision.
# Everything lands in $OUT if set, else ./gpu_check_out: gpu_check.log (all output), summary.txt,
# environment.json, cuda_tests.xml, attention_speed.json, e2e_throughput.json (few files: the device tool
# returns at most 8).
#
# A failed step is reported and the later steps still run (a lent GPU is scarce); the script exits non-zero if
# any step failed or was skipped for lack of time. Without the installed packages nothing can run, so a failed
# install or import check stops it at once.
#
# Settings (environment): PYTHON (default python3), GPU_CHECK_BUDGET_S (default 540: steps that would start
# after it are skipped, so the outputs come back inside a 600 s call), GPU_CHECK_DEVICE=cpu (a rehearsal on a
# machine without GPU: CUDA tests may skip, benchmarks run small on the CPU), GPU_CHECK_SITE (install folder).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
REPO=$(pwd)
OUT_DIR=${OUT:-$REPO/gpu_check_out}
PY=${PYTHON:-python3}
SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
WHEELS=$REPO/gpu_wheels
DEVICE=${GPU_CHECK_DEVICE:-cuda}
BUDGET_S=${GPU_CHECK_BUDGET_S:-540}
LOG=$OUT_DIR/gpu_check.log
SUMMARY=$OUT_DIR/summary.txt
# Shared with the step processes (the script runs each step as "gpu_check.sh __run FUNCTION ARGS..." so that
# `timeout` can stop it).
export GPU_CHECK_TMP=${GPU_CHECK_TMP:-$(mktemp -d)}
TMP=$GPU_CHECK_TMP
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_INPUT=1
export MPLBACKEND=Agg
START=$(date +%s)
FAILED=0

say() { echo "$*" | tee -a "$LOG"; }

# step NAME LIMIT_S COMMAND...: runs COMMAND with its output in the log, within its limit and the budget left.
step() {
    local name=$1 limit=$2 left rc began
    shift 2
    left=$((BUDGET_S - ($(date +%s) - START)))
    if ((left < 30)); then
        say "=== $name: SKIPPED (${left} s of the ${BUDGET_S} s budget left)"
        echo "SKIPPED  $name (no time left)" >>"$SUMMARY"
        FAILED=1
        return 1
    fi
    ((limit > left)) && limit=$left
    say "=== $name (limit ${limit} s)"
    began=$(date +%s)
    # SIGINT first: Python unwinds (pytest's cleanup kills the torchrun jobs it started), SIGKILL 15 s later.
    timeout --signal=INT --kill-after=15 "$limit" bash "$REPO/benchmarks/gpu_check.sh" __run "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    local took=$(($(date +%s) - began))
    if ((rc == 0)); then
        echo "ok       $name (${took} s)" >>"$SUMMARY"
    else
        [[ $rc -eq 124 || $rc -eq 137 ]] && say "=== $name: TIMED OUT after ${limit} s"
        say "=== $name: FAILED (exit $rc)"
        echo "FAILED   $name (exit $rc, ${took} s)" >>"$SUMMARY"
        FAILED=1
    fi
    return "$rc"
}

finish() {
    {
        echo
        echo "benchmarks:"
        "$PY" benchmarks/gpu_check_report.py summary "$OUT_DIR" 2>&1
        echo
        echo "total $(($(date +%s) - START)) s; outputs in $OUT_DIR"
    } >>"$SUMMARY"
    say ""
    say "===================== GPU check summary ====================="
    tee -a "$LOG" <"$SUMMARY"
    rm -rf "$TMP"
    if ((FAILED)); then
        say "GPU CHECK FAILED: see the FAILED / SKIPPED lines above and $LOG"
        exit 1
    fi
    say "GPU check passed"
    exit 0
}

# -- environment and preflight -----------------------------------------------------------------------------
preflight() {
    command -v nvidia-smi >/dev/null && nvidia-smi
    "$PY" - "$DEVICE" <<'EOF'
import sys
import torch

print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"cuda available: {torch.cuda.is_available()}")
if sys.argv[1] == "cuda" and not torch.cuda.is_available():
    sys.exit("error: no CUDA device visible to torch; run this on the GPU machine (GPU_CHECK_DEVICE=cpu rehearses on a CPU)")
EOF
}

install_wheels() {
    [[ -d $WHEELS ]] || { echo "error: $WHEELS missing: run benchmarks/prepare_gpu_wheels.sh and carry gpu_wheels"; return 1; }
    local before wheels
    before=$("$PY" -c 'import torch; print(torch.__version__)') || return 1
    # Only what the machine lacks: a package already there keeps the machine's version.
    mapfile -t wheels < <("$PY" - "$WHEELS" <<'EOF'
import importlib.metadata as md
import pathlib
import sys

for wheel in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    name = wheel.name.split("-")[0]
    try:
        print(f"already installed: {name} {md.version(name)}", file=sys.stderr)
    except md.PackageNotFoundError:
        print(wheel)
EOF
    )
    echo "installing ${#wheels[@]} wheels into $SITE"
    if ((${#wheels[@]})); then
        # The machine's torch pinned as a constraint too: --no-deps already keeps pip from touching it.
        "$PY" -m pip freeze 2>/dev/null | grep -iE '^(torch|torchvision)==' >"$TMP/constraints.txt"
        "$PY" -m pip install --no-index --no-deps --no-compile --upgrade --target "$SITE" \
            -c "$TMP/constraints.txt" "${wheels[@]}" || return 1
    fi
    # avalanche-lib imports wandb at import time but never uses it here: a stand-in that raises on any use.
    if ! "$PY" -c 'import wandb' 2>/dev/null && [[ ! -e $SITE/wandb ]]; then
        echo "wandb missing: installing the stand-in benchmarks/offline_stubs/wandb"
        mkdir -p "$SITE" && cp -r "$REPO/benchmarks/offline_stubs/wandb" "$SITE/" || return 1
    fi
    local after
    after=$(PYTHONPATH="$SITE" "$PY" -c 'import torch; print(torch.__version__)') || return 1
    [[ $after == "$before" ]] || { echo "error: torch changed from $before to $after"; return 1; }
    echo "torch $after untouched"
}

check_imports() {
    "$PY" - <<'EOF'
import avalanche
import avalanche.training
import timm
import torch

import avalanche_lpa
from avalanche_lpa import cli, runner  # noqa: F401  (the runner and everything it imports)
from avalanche_lpa.training import STRATEGIES

print(f"avalanche-lib {avalanche.__version__} from {avalanche.__file__}")
print(f"avalanche_lpa {avalanche_lpa.__version__} from {avalanche_lpa.__file__}; timm {timm.__version__}; "
      f"torch {torch.__version__}; strategies: {', '.join(STRATEGIES)}")
EOF
}

cuda_tests() {
    local allow=()
    [[ $DEVICE == cuda ]] || allow=(--allow-skips)
    "$PY" -m pytest tests/test_cuda.py -p no:cacheprovider -q -rs --durations=10 \
        --junitxml="$OUT_DIR/cuda_tests.xml"
    local rc=$?
    "$PY" benchmarks/gpu_check_report.py check-junit "$OUT_DIR/cuda_tests.xml" "${allow[@]}" || return 1
    return "$rc"
}

# attention LABEL ARGS...: one attention_speed.py run, appended to attention_speed.json.
attention() {
    local label=$1
    shift
    rm -f "$TMP/run.json"
    "$PY" benchmarks/attention_speed.py --device "$DEVICE" --json "$TMP/run.json" "$@" &&
        "$PY" benchmarks/gpu_check_report.py add-run "$OUT_DIR/attention_speed.json" "$TMP/run.json" "$label"
}

# e2e LABEL ARGS...: one e2e_throughput.py run, appended to e2e_throughput.json.
e2e() {
    local label=$1
    shift
    rm -f "$TMP/run.json"
    "$PY" benchmarks/e2e_throughput.py --device "$DEVICE" --json "$TMP/run.json" "$@" &&
        "$PY" benchmarks/gpu_check_report.py add-run "$OUT_DIR/e2e_throughput.json" "$TMP/run.json" "$label"
}

if [[ ${1:-} == __run ]]; then
    shift
    "$@"
    exit $?
fi

mkdir -p "$OUT_DIR"
: >"$LOG"
: >"$SUMMARY"
rm -f "$OUT_DIR/attention_speed.json" "$OUT_DIR/e2e_throughput.json" "$OUT_DIR/cuda_tests.xml" \
    "$OUT_DIR/environment.json"
say "GPU check of $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'this tree') on $(uname -n), device $DEVICE"
step preflight 60 preflight || finish
step install 120 install_wheels || finish
# The repository first (avalanche_lpa and the tests' helpers), then the installed wheels; children inherit it.
export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}"
step imports 120 check_imports || finish
step environment 60 "$PY" benchmarks/gpu_check_report.py environment "$OUT_DIR/environment.json"

step cuda-tests 330 cuda_tests

if [[ $DEVICE == cuda ]]; then
    # Whole model at the CIFAR preset, batch 128 (LPA's kernel is lpa_fused on every device); the layers at the
    # three shapes in both precisions (issue 28's goals: LPA <= 1.10x plain time, <= 1.5x memory; GPSA <= 1.15x).
    model=(--level model --rounds 30 --warmup 5)
    layer=(--level layer --shape all --rounds 20 --warmup 5 --candidates mhsa mhsa_plus4 lpa_fused lpa_sdpa gpsa
        timm_vit)
    step attention-layer 120 attention layer-fp32 "${layer[@]}"
    step attention-layer-bf16 120 attention layer-bf16 "${layer[@]}" --autocast bf16
    step attention-cifar-fp32 120 attention cifar-model-fp32 "${model[@]}" --shape cifar --batch 128
    step attention-cifar-bf16 120 attention cifar-model-bf16 "${model[@]}" --shape cifar --batch 128 --autocast bf16
    step attention-imagenet-fp32 120 attention imagenet-model-fp32 "${model[@]}" --shape imagenet --batch 32
    step attention-imagenet-bf16 120 attention imagenet-model-bf16 "${model[@]}" --shape imagenet --batch 32 \
        --autocast bf16
    e2e_args=(--model lpa_vit_cifar --images 4096 --batch 128 --rounds 3)
else
    # Rehearsal on a CPU: the same steps, small. Whole models without the memory column: on a CPU each
    # candidate's memory is measured in a fresh process, a minute of imports for nothing the GPU path uses.
    small=(--rounds 2 --warmup 1 --batch 2 --candidates mhsa lpa_fused lpa_matmul gpsa)
    step attention-layer 120 attention layer-fp32 --level layer --shape all "${small[@]}"
    step attention-cifar-fp32 120 attention cifar-model-fp32 --level model --shape cifar "${small[@]}" --no-memory
    step attention-cifar-bf16 120 attention cifar-model-bf16 --level model --shape cifar "${small[@]}" --no-memory \
        --autocast bf16
    e2e_args=(--model lpa_vit_tiny --images 256 --batch 64 --rounds 1)
fi
step e2e-fp32 150 e2e e2e-fp32 "${e2e_args[@]}" --precision fp32
step e2e-bf16 150 e2e e2e-bf16 "${e2e_args[@]}" --precision bf16
finish
