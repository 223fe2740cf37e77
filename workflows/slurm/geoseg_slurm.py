"""geoseg batch on a SLURM cluster through dask-jobqueue: one dask worker per GPU job.

    pip install dask-jobqueue
    python workflows/slurm/geoseg_slurm.py /opt/geoseg/workflows/nightly.yaml --jobs 8

Each SLURM job runs one dask worker on one GPU with 16 cores; it offers one ``scene`` resource, so it
takes one scene at a time (geoseg.cluster.workers). The masks are written by the workers into the job
file's output folders, which must be on a file system every node sees (Lustre, GPFS, NFS). This
process is the batch: it claims scenes, writes the JSON-lines log and the summary, and exits with
geoseg batch's codes (0 all done, 1 some failed, 130/143 stopped) for the scheduler that started it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dask_jobqueue import SLURMCluster
from distributed import Client

from geoseg.batch import load_job_file, run_jobs
from geoseg.cluster.scenes import DaskScenes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job_file", type=Path)
    parser.add_argument("--jobs", type=int, default=4, help="SLURM jobs = dask workers = GPUs")
    parser.add_argument("--queue", default="gpu")
    parser.add_argument("--cores", type=int, default=16)
    parser.add_argument("--memory", default="64GB")
    args = parser.parse_args()

    # The job's cores for the CPU libraries: an OMP_NUM_THREADS in the worker's environment wins over dask's 1.
    # (dask's 64 KiB MALLOC_TRIM_THRESHOLD_ is undone by geoseg inside the worker: relax_malloc.)
    prologue = [f"export OMP_NUM_THREADS={args.cores} MKL_NUM_THREADS={args.cores}"]
    cluster = SLURMCluster(queue=args.queue, cores=args.cores, processes=1, memory=args.memory,
                           job_extra_directives=["--gres=gpu:1"], job_script_prologue=prologue,
                           worker_extra_args=["--resources", "scene=1"], walltime="06:00:00")
    cluster.scale(jobs=args.jobs)

    def connect(stack):  # inside the batch's log: a cluster that never comes is written there
        client = stack.enter_context(Client(cluster))
        client.wait_for_workers(1, timeout=1800)  # the queue may take a while
        return DaskScenes(client)

    # The batch's folders, log and summary (OUTPUT_DIR/geoseg-batch.jsonl, -summary.json) and exit code, as
    # `geoseg batch --job` makes them.
    summary = run_jobs(load_job_file(args.job_file), connect=connect)
    cluster.close()
    print(summary.counts, file=sys.stderr)
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(main())
