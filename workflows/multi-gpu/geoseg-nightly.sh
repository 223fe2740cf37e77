#!/usr/bin/env bash
# One machine, several GPUs: the nightly job file over a local dask cluster with one worker per GPU.
# Each worker is pinned to its GPU (CUDA_VISIBLE_DEVICES), keeps its network loaded between scenes, and
# runs one scene at a time with its share of the cores as reader threads. Scenes are claimed, so an
# overlapping run (or a second machine on the same shared folder) never does a scene twice.
#
#   crontab:  30 2 * * *  /opt/geoseg/workflows/multi-gpu/geoseg-nightly.sh
set -euo pipefail
GPUS=${GPUS:-$(nvidia-smi --list-gpus | wc -l)}
exec geoseg batch --job /opt/geoseg/workflows/nightly.yaml --gpus "$GPUS" --quiet

# One very large scene over every GPU instead (row bands, one writer, the same mask as one GPU makes):
#   geoseg run /data/mosaic/region.tif -o /data/masks/region.mask.tif --gpus "$GPUS" --reproducible
