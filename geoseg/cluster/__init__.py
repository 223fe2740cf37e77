"""dask.distributed for scale-out: a batch's scenes on workers (:mod:`geoseg.cluster.scenes`), one large
scene split into row strips across workers (:mod:`geoseg.cluster.split`), and the clusters they run on
(:mod:`geoseg.cluster.workers`: an existing scheduler, or a local one with a worker per GPU).

Workers keep their loaded networks and device sessions between tasks
(:data:`geoseg.engine.resident.RESIDENT`); tasks carry model names, never networks. Resume records,
scene claims, the JSON-lines log and exit codes are those of a local batch."""
