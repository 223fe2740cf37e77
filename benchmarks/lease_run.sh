#!/usr/bin/env bash
# One GPU lease for issues 30 and 35, run on the device machine from the repository root with .site and .bench
# carried (benchmarks/lease_prepare.sh makes them). What it runs depends on the card it finds:
#   H200: the develop kernels' GPU tests, issue 30's rows (one_time_costs.py: cold, warm, serve) and issue 35's
#         (peers with the toolbelt script)
#   H100: the GPU tests, then issue 35's A/B: peers with --steady-runs 5 against --variants "$VARIANTS"
# Everything it prints also goes to $OUT (otc.txt, peers.txt). Stays under the device tool's 600 s a call.
set -u
t0=$(date +%s)
left() { echo $(( ${1:-585} - ($(date +%s) - t0) )); }
VARIANTS=${VARIANTS:-fused_develop=true}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; nproc; date -u
python3 -c "import tarfile; tarfile.open('.site/all.tar.xz').extractall('/tmp/site')" || exit 1
export PYTHONPATH=/tmp/site:$PWD
SP=$(python3 -c "import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))")
# the image sets PYTHONDONTWRITEBYTECODE=1: without bytecode every fresh process compiles ~1,900 modules
python3 -m compileall -q -j 16 /tmp/site "$SP" geoseg benchmarks > /dev/null 2>&1
echo "setup done in $(( $(date +%s) - t0 )) s"
mkdir -p "${OUT:-/tmp/out}"
run=(python3 benchmarks/bench_run.py .bench/s2.tif --model .bench/efb4 --more-models .bench/vgg16 --sizes 16384
     --parts peers --format gtiff --workdir /tmp/bw)
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
  # the develop kernels' bits first (seconds): the full GPU tests do not fit beside the H200's rows
  timeout 60 python3 -m pytest -q tests/test_gpu.py -k "six_passes or one_kernel" -p no:cacheprovider 2>&1 | tail -4
  timeout 250 python3 benchmarks/one_time_costs.py .bench/s2.tif --model .bench/efb4 --size 16384 --rounds 2 \
      --parts cold warm serve --workdir /tmp/otc 2>&1 | tee "${OUT:-/tmp/out}/otc.txt" | tail -60
  echo "one_time_costs done at $(( $(date +%s) - t0 )) s"
  timeout "$(left)" "${run[@]}" --variants trace_waits=true 2>&1 | tee "${OUT:-/tmp/out}/peers.txt" | tail -60
else
  timeout 150 python3 -m pytest -q -x tests/test_gpu.py -p no:cacheprovider 2>&1 | tail -8
  echo "tests done at $(( $(date +%s) - t0 )) s"
  # shellcheck disable=SC2086
  timeout "$(left)" "${run[@]}" --no-toolbelt --steady-runs 5 --variants $VARIANTS 2>&1 \
      | tee "${OUT:-/tmp/out}/peers.txt" | tail -60
fi
echo "all done at $(( $(date +%s) - t0 )) s"
