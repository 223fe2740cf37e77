#!/usr/bin/env bash
# Prepares, on the development machine, what a GPU lease carries (both folders ignored by git):
#   .site/all.tar.xz  the wheels geoseg needs beyond the device image (rasterio, smp, dask, distributed, platformdirs,
#                     pytorch-toolbelt, nvCOMP), unpacked and xz-packed without headers or tests: about 50 MB
#   .bench/           the real Sentinel-2 scene as s2.tif and model folders efb4/ and vgg16/ (cards only: random
#                     weights are written there on first use)
# Then: run(command="bash benchmarks/lease_run.sh", carry=[".site", ".bench"]) through the device tool.
# About 2 minutes on 2 cores (most of it xz). Needs ../shared (tools, data) and geoseg importable by $PYTHON.
set -euo pipefail
top=$(git rev-parse --show-toplevel)
cd "$top"
py=${PYTHON:-python3}  # an interpreter with geoseg installed (PYTHON=/path/to/venv/bin/python)
"$py" -c "from geoseg.models import get_card; get_card('csmask-6b-l1c')" 2>/dev/null || { echo "lease_prepare.sh: $py cannot import geoseg; set PYTHON to the project's venv" >&2; exit 2; }
for d in /.site/ /.whl/ /.whl2/; do grep -qx "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done
../shared/tools/device-wheels.sh platformdirs pytorch-toolbelt > /dev/null
mkdir -p .whl2
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
  -d .whl2 "nvidia-libnvcomp-cu13>=6" 2>&1 | grep -v '^WARNING' || true
pack=$(mktemp -d)
for w in .whl/*.whl .whl2/*.whl; do unzip -q -o "$w" -d "$pack"; done
rm -rf "$pack"/nvidia/libnvcomp/{include,bin,lib64/cmake,lib64/libnvcomp_cpu.so.6}
find "$pack" -type d -name tests -prune -exec rm -rf {} +
mkdir -p .site
tar cf - -C "$pack" . | xz -9e -T2 > .site/all.tar.xz
rm -rf "$pack"
mkdir -p .bench/efb4 .bench/vgg16
install -m 644 ../shared/data/sentinel2-t33uuu/S2A_T33UUU_20170216_L1C_B02-B03-B04-B08-B11-B12_10m.tif .bench/s2.tif
"$py" - <<'PY'
import json
from pathlib import Path

from geoseg.models import get_card

get_card("csmask-6b-l1c").save(Path(".bench/efb4/config.json"))
card = json.loads(Path(".bench/efb4/config.json").read_text())
Path(".bench/vgg16/config.json").write_text(json.dumps({**card, "encoder": "vgg16", "name": "bench-vgg16"}, indent=2))
PY
rm -f .bench/*/model.safetensors  # made on the device: they would not fit in the carry
du -sh .site .bench
