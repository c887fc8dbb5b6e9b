"""Every Redis key Hydra uses, built here and nowhere else.

All keys live under ``hydra:``. rq's own keys (``rq:queue:hydra``, ``rq:job:<id>``, …) belong to
rq; Hydra only enqueues rq jobs through rq's API and, when a job ends, removes its leftover
tickets from ``rq:queue:hydra``.

================================  ======  ==========================================  =====================
key                               type    contents / writer                           expiry
================================  ======  ==========================================  =====================
hydra:jobs                        zset    job id → creation time. scheduler           member removed by the
                                                                                       monitor once the job
                                                                                       record has expired
hydra:job:<job>                   hash    the job record: task, params (JSON), seed,  result TTL (default 7
                                          state, units_total/claimed/done, result     days) once the job ends
                                          sums, timestamps, error. scheduler creates;
                                          Lua scripts update
hydra:job:<job>:chunks            hash    chunk id → chunk JSON for chunks not yet     deleted when the job
                                          done ({first, count, state, attempt,        ends
                                          worker, deadline}). Lua scripts only
hydra:job:<job>:tickets           set     rq job ids of this job's tickets still      deleted when the job
                                          waiting on the queue. scheduler, workers    ends
hydra:job:<job>:workers           hash    worker name → units it counted              result TTL
hydra:job:<job>:blobs             hash    chunk id → compressed result (tiles)        result TTL
hydra:job:<job>:trace             list    "units_done inside" after each chunk, for   result TTL
                                          the convergence chart
hydra:job:<job>:unverified        hash    chunk id → {worker, range, sums} counted    deleted when the job
                                          on one result (verify auto)                 ends
hydra:quarantine                  set     workers caught with a wrong result          kept (operator clears)
hydra:job:<job>:data              string  task data shared by all chunks (e.g.        result TTL
                                          Mandelbrot row-cost prefix sums)
hydra:deadlines                   zset    "<job>:<chunk>" → deadline (unix s) of      members removed on
                                          running chunks. Lua scripts                 completion/requeue
hydra:pending                     zset    "<job>:<chunk>" → time after which the      members removed on
                                          monitor checks its ticket is still queued   claim
hydra:worker:<name>               hash    host, device, pid, rate:<task> (units/s     24 h, refreshed by the
                                          EMA), chunks, current chunk, last seen      worker
hydra:worker:<name>:alive         string  heartbeat; its expiry is how death is seen  heartbeat TTL (3 s)
hydra:workers                     zset    worker name → last heartbeat time           monitor drops members
                                                                                       gone for a day
hydra:rates:<task>                zset    worker name → measured rate (units/s)       monitor drops dead
                                                                                       workers
hydra:errors                      list    recent malformed chunks and task errors     capped at 200 entries
hydra:monitor:lease               string  id of the monitor that acts now            lease TTL (3 s)
hydra:volunteers                  set     names given ACL users (hydra volunteer)     removed on revoke
hydra:emit:<job>                  string  gate that coalesces progress events         100 ms
================================  ======  ==========================================  =====================
"""

from __future__ import annotations

PREFIX = "hydra"

JOBS = f"{PREFIX}:jobs"
DEADLINES = f"{PREFIX}:deadlines"
PENDING = f"{PREFIX}:pending"
WORKERS = f"{PREFIX}:workers"
ERRORS = f"{PREFIX}:errors"
MONITOR_LEASE = f"{PREFIX}:monitor:lease"
VOLUNTEERS = f"{PREFIX}:volunteers"
QUARANTINE = f"{PREFIX}:quarantine"

ERRORS_KEPT = 200


def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def chunks(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:chunks"


def tickets(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:tickets"


def job_workers(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:workers"


def blobs(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:blobs"


def trace(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:trace"


def data(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:data"


def job_keys(job_id: str) -> list[str]:
    """Every key that belongs to one job, in the order the Lua scripts expect them."""
    return [
        job(job_id),
        chunks(job_id),
        tickets(job_id),
        job_workers(job_id),
        blobs(job_id),
        trace(job_id),
        data(job_id),
    ]


def unverified(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:unverified"


def worker(name: str) -> str:
    return f"{PREFIX}:worker:{name}"


def worker_alive(name: str) -> str:
    return f"{PREFIX}:worker:{name}:alive"


def rates(task: str) -> str:
    return f"{PREFIX}:rates:{task}"


def emit_gate(job_id: str) -> str:
    return f"{PREFIX}:emit:{job_id}"


def chunk_member(job_id: str, chunk_id: int | str) -> str:
    """Member of the deadline and pending sets: ``<job>:<chunk>``."""
    return f"{job_id}:{chunk_id}"


def parse_chunk_member(member: str) -> tuple[str, int]:
    job_id, _, chunk_id = member.rpartition(":")
    return job_id, int(chunk_id)
