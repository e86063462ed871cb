#!/usr/bin/env bash
# The GPU tests and every benchmark that takes --device, on one CUDA machine, inside one time budget.
#
#   bash benchmarks/gpu_all.sh OUT_DIR [BUDGET_SECONDS]
#
# From the repository root, with the project's environment first on PATH (`PATH=$PWD/.venv/bin:$PATH`: `python3` is
# the interpreter that runs everything). perceptual and channel read FSDD from ../shared/data/fsdd.
# Each step runs under `timeout` with at most its own cap and never past the budget's end, so one slow or broken
# step costs only its cap. Everything goes to OUT_DIR/gpu_all.log (one file: output written before a kill survives);
# each step's exit status is in the log's last lines (124: killed at its cap). Benchmarks that need a finished grid
# (convergence, optimality, stored_models, memory) are left out: they measure a store, not the device.
# GPU_STEPS="attack_speed gpu_tests" runs only the steps named (a rerun of those that failed).
set -u
out=${1:?usage: gpu_all.sh OUT_DIR [BUDGET_SECONDS]}
budget=${2:-480}
mkdir -p "$out"
log="$out/gpu_all.log"
end=$(( $(date +%s) + budget ))
export PYTHONUNBUFFERED=1
summary=()

step() {  # step NAME CAP_SECONDS COMMAND...
  local name=$1 cap=$2; shift 2
  if [[ -n "${GPU_STEPS:-}" && " $GPU_STEPS " != *" $name "* ]]; then return; fi
  local left=$(( end - $(date +%s) ))
  (( left < cap )) && cap=$left
  if (( cap < 10 )); then summary+=("$name: not run (budget spent)"); return; fi
  echo "=== $name (cap ${cap} s): $*" >>"$log"
  local t0=$(date +%s)
  timeout -k 5 "$cap" "$@" >>"$log" 2>&1
  local rc=$?
  summary+=("$name: rc $rc, $(( $(date +%s) - t0 )) s")
  echo "=== $name: rc $rc" >>"$log"
}

{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'; } >>"$log" 2>&1

step attack_speed 110 python3 -m benchmarks.attack_speed --device cuda
step training_step 60 python3 -m benchmarks.training_step --device cuda
step optimizer_step 40 python3 -m benchmarks.optimizer_step --device cuda
step nes 75 python3 -m benchmarks.nes --device cuda
step harness 30 python3 -m benchmarks.harness --device cuda
step frontends 40 python3 -m benchmarks.frontends --device cuda
step memory_format 60 python3 -m benchmarks.memory_format --device cuda
step black_box 45 python3 -m benchmarks.black_box --device cuda
step certify 75 python3 -m benchmarks.certify --device cuda --inputs 16  # ART certifies one input at a time
step perceptual 25 python3 -m benchmarks.perceptual --device cuda --threads 4
step channel 25 python3 -m benchmarks.channel --device cuda --threads 4
# GPU_TEST_PATHS: where to collect the `gpu` tests (default all of tests/; on a machine that lacks the packages of
# other test modules, e.g. MLflow or Ray, name the files that hold `gpu` tests: `grep -l mark.gpu tests/*.py`)
# shellcheck disable=SC2086
step gpu_tests 120 python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="-ra --durations=10" \
  ${GPU_TEST_PATHS:-tests}
printf '%s\n' "--- summary" "${summary[@]}" >>"$log"
cat "$log"
