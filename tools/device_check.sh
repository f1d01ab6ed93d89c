#!/usr/bin/env bash
# The GPU checks in one run, for a lent GPU machine (bare: its python3 has torch, numpy, PyYAML and
# tqdm, nothing of ours installed), or any CUDA machine with the project checked out:
#   tools/device_check.sh [OUT_DIR]          (default: $OUT, else outputs/device)
# Writes cuda_tests.log and one JSON per perception benchmark (LiDAR target: >= 160 scans/s at
# 64 x 2048 on CUDA). Each step runs even when an earlier one fails; the exit status is the first
# failure's.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-outputs/device}}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
status=0
step() {  # step NAME COMMAND...: run, keep stdout in $out/NAME, report the time taken
    local name=$1; shift
    local t0=$SECONDS
    "$@" > "$out/$name" 2> >(tail -n 40 >&2)
    local rc=$?
    echo "$name: exit $rc, $((SECONDS - t0)) s"
    [ $rc -eq 0 ] || [ $status -ne 0 ] || status=$rc
}
$py -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
# --noconftest: the suite's conftest imports the simulator, whose packages a bare machine lacks
step cuda_tests.log $py -m pytest -q -rs --noconftest -p no:cacheprovider tests/test_cuda.py
step lidar_bench.json $py -m vlnce.cli.main lidar bench --json
step reid_bench.json $py -m vlnce.cli.main reid bench --json
step detect_bench.json $py -m vlnce.cli.main detect bench --json
tail -n 3 "$out/cuda_tests.log"
exit $status
