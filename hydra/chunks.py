"""Chunk descriptors and the rq tickets that carry them.

A chunk descriptor is the only argument of an rq job: small JSON naming a job, one of its chunks,
the task, the seed and the chunk's unit range. The rq job is a *ticket*: it asks some worker to
claim that chunk. The truth about a chunk lives in ``hydra:job:<job>:chunks`` (see
:mod:`hydra.scripts`), so a stale, duplicated or forged ticket can at worst be refused.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from hydra import keys
from hydra.errors import MalformedChunk
from hydra.settings import QUEUE_NAME
from hydra.tasks import ENTRY_POINT, TASKS

JOB_ID = re.compile(r"[0-9a-f]{12}")
MAX_UNITS = 10**13
TICKET_FAILURE_TTL = 24 * 3600


@dataclass(frozen=True)
class ChunkDescriptor:
    job: str
    chunk: int
    task: str
    seed: int
    first: int
    count: int
    attempt: int = 0
    # A copy of a chunk that another worker is still running (the tail; see hydra.monitor).
    speculative: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Any) -> ChunkDescriptor:
        """Check every field; raise :class:`MalformedChunk` for anything a scheduler would not send."""
        if not isinstance(obj, dict):
            raise MalformedChunk(f"chunk descriptor must be a JSON object, got {type(obj).__name__}")
        expected = {f for f in cls.__dataclass_fields__}
        unknown = set(obj) - expected
        missing = expected - set(obj) - {"attempt", "speculative"}
        if unknown or missing:
            raise MalformedChunk(f"chunk descriptor fields wrong: unknown {sorted(unknown)}, missing {sorted(missing)}")
        job, task = obj["job"], obj["task"]
        if not isinstance(job, str) or not JOB_ID.fullmatch(job):
            raise MalformedChunk(f"bad job id {job!r}")
        if not isinstance(task, str) or task not in TASKS:
            raise MalformedChunk(f"task {task!r} is not in Hydra's registry")
        bounds = {
            "chunk": (0, MAX_UNITS),
            "seed": (0, 2**63 - 1),
            "first": (0, MAX_UNITS),
            "count": (1, MAX_UNITS),
            "attempt": (0, 1000),
        }
        for name, (low, high) in bounds.items():
            value = obj.get(name, 0)
            if type(value) is not int or not low <= value <= high:
                raise MalformedChunk(f"chunk field {name} must be an integer in [{low}, {high}], got {value!r}")
        if type(obj.get("speculative", False)) is not bool:
            raise MalformedChunk("chunk field speculative must be true or false")
        return cls(**obj)


def new_job_id() -> str:
    return secrets.token_hex(6)


def ticket_id(chunk: ChunkDescriptor) -> str:
    return f"h-{chunk.job}-{chunk.chunk}-{secrets.token_hex(4)}"


def rq_queue(redis: Redis) -> Queue:
    return Queue(QUEUE_NAME, connection=redis, serializer=JSONSerializer)


def enqueue_tickets(
    redis: Redis, chunks: Iterable[ChunkDescriptor], *, at_front: bool = False, result_ttl: int = 7 * 24 * 3600
) -> list[str]:
    """Put one rq job per chunk on the ``hydra`` queue, and remember it in the job's ticket set."""
    chunks = list(chunks)
    if not chunks:
        return []
    queue = rq_queue(redis)
    pipe = redis.pipeline()
    datas, ids = [], []
    for chunk in chunks:
        tid = ticket_id(chunk)
        ids.append(tid)
        kind = "copy of " if chunk.speculative else ""
        datas.append(
            Queue.prepare_data(
                ENTRY_POINT,
                args=(chunk.to_json(),),
                job_id=tid,
                result_ttl=0,
                failure_ttl=TICKET_FAILURE_TTL,
                timeout=-1,
                at_front=at_front,
                description=f"{kind}{chunk.task} job {chunk.job} chunk {chunk.chunk} units {chunk.first}+{chunk.count}",
            )
        )
        pipe.sadd(keys.tickets(chunk.job), tid)
    for job_id in {c.job for c in chunks}:
        pipe.expire(keys.tickets(job_id), result_ttl)
    queue.enqueue_many(datas, pipeline=pipe)
    pipe.execute()
    return ids
