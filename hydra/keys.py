"""Every Redis key Hydra uses, built here and nowhere else.

Two kinds of keys, and the ACL is the wall between them:

* **Trusted keys** (``hydra:*`` except ``hydra:v:*``): job state, chunks, deadlines, worker facts,
  verification, the ledger. Only the operator's processes (scheduler, ``hydra monitor``, the page)
  read or write them. A volunteer's credential cannot touch them at all.
* **A volunteer's own keys** (``hydra:v:<user>:*``, ``<user>`` being its Redis ACL user): the only
  keys its credential can reach, each with only the commands it needs (see :mod:`hydra.volunteers`).

Volunteer keys (``<user>`` = ACL user, ``<wid>`` = worker id chosen by the worker):

==================================  ======  =================================================  ==============
key                                 type    contents / who writes / what the volunteer may do   expiry
==================================  ======  =================================================  ==============
hydra:v:<user>:outbox               list    hello / result / error / bye messages. volunteer:  drained by the
                                            RPUSH only. monitor: LPOP, validates each          monitor
hydra:v:<user>:w:<wid>:inbox        list    chunk descriptors and control messages. monitor:   deleted when the
                                            RPUSH. volunteer: LPOP/BLPOP only                  worker is gone
hydra:v:<user>:w:<wid>:alive        string  heartbeat. monitor creates it on hello; volunteer: heartbeat TTL;
                                            PEXPIRE only (so it cannot create keys)            expiry = death
==================================  ======  =================================================  ==============

Trusted keys:

================================  ======  ==========================================  =====================
key                               type    contents                                    expiry
================================  ======  ==========================================  =====================
hydra:jobs                        zset    job id → creation time (every job)          member dropped once
                                                                                       the record expired
hydra:active                      zset    job id → creation time (queued/running):    member removed when
                                          the order in which dispatch serves jobs     the job ends
hydra:job:<job>                   hash    the job record: task, version, params,      result TTL once the
                                          seed, state, units_*, sums, timestamps      job ends
hydra:job:<job>:chunks            hash    chunk id → chunk JSON (see hydra.scripts)   deleted at the end
hydra:job:<job>:pending           zset    chunk id → first unit, of pending chunks    deleted at the end
hydra:job:<job>:wanted            zset    chunk id → time, of chunks wanting a copy   deleted at the end
                                          by another volunteer (verify, tail)
hydra:job:<job>:running           zset    chunk id → expected end of its fastest      deleted at the end
                                          holder (tail copies)
hydra:job:<job>:late              hash    "<chunk>:<nonce>" → 1 for assignments past one 1 day
                                          deadline (taken back at the second). monitor
hydra:job:<job>:workers           hash    volunteer → units it was credited with      result TTL
hydra:job:<job>:blobs             hash    chunk id → compressed result (tiles)        result TTL
hydra:job:<job>:trace             list    "display_done sum…" after each chunk         result TTL
hydra:job:<job>:data              string  task data for sizing (Mandelbrot row costs) result TTL
hydra:deadlines                   zset    "<job>:<chunk>:<nonce>" → deadline          removed on result /
                                                                                       requeue
hydra:held:<worker>               set     assignments a worker holds (same members)   deleted with the worker
hydra:worker:<worker>             hash    user, host, device, zone, tasks, rate:<t>,  24 h after last seen
                                          chunks, joined, last_seen, busy_since
hydra:live                        zset    worker → joined time (alive workers)        members removed on death
hydra:idle                        zset    worker → since, workers with room for work  members removed when
                                          that dispatch found nothing for             served or dead
hydra:rates:<task>                zset    worker → measured rate (work/s)             member removed on death
hydra:counts                      hash    live workers by device:<d>, zone:<z>,       kept; a worker's
                                          task:<t>, version:<t>@<v> (tasks installed  fields are deleted
                                          here only); measured rates rate:<t> and     when they reach 0
                                          zrate:<zone>:<t> (by zone); done:<unit>
hydra:volunteer:<user>            hash    clean results, state, reason, last rates    kept
                                          by device rate:<device>:<t>
hydra:volunteer:<user>:workers    set     the volunteer's live workers                members removed on death
hydra:vouched:<user>              hash    "<job>:<chunk>" → JSON of results accepted  result TTL
                                          on this volunteer's word alone
hydra:quarantine                  set     volunteers caught with a wrong result       kept (operator clears)
hydra:quarantine:unfinished       zset    quarantined volunteer → when, until its     removed once clean
                                          results are redone and its workers stopped  for 60 s (monitor)
hydra:cutoff                      hash    volunteer → why it was cut off              kept
hydra:volunteers                  set     names given ACL users (hydra volunteer)     removed on revoke
hydra:ledger                      list    credit ledger entries (hydra.ledger): leaf  kept
                                          index = position. Lua ACCEPT
hydra:ledger:heads                list    signed tree heads (JSON), oldest first      kept
hydra:ledger:state                hash    ``size``: entries folded into the tree      kept
                                          cache and the board (compare-and-set)
hydra:ledger:level:<k>            string  hashes (32 bytes each) of the perfect       kept
                                          subtrees of 2**k leaves, k ≥ 4
hydra:ledger:by:<volunteer>       list    leaf indices of a volunteer's entries       kept
hydra:credit:board                hash    volunteer → standing JSON (hydra.credit)    kept
hydra:credit:rank                 zset    volunteer → credit (milli), with the board  kept
hydra:credit:totals               hash    ``credit``: the board's total (milli)       kept
hydra:errors                      list    recent refused messages and task errors     capped at 200
hydra:monitor:lease               string  id of the monitor that runs periodic passes lease TTL (3 s)
hydra:monitor:stats               hash    monitor id → its longest periodic pass (s)  kept
hydra:emit:<job>                  string  gate that coalesces progress events         100 ms
hydra:carbon:volunteer            hash    volunteer → mg CO2 of its accepted chunks   kept
hydra:carbon:zone                 hash    grid zone → mg CO2 of the chunks run there  kept (1,000 zones at
                                                                                      most, then unknown)
                                          (hydra.carbon.accounting)
hydra:carbon:zone:energy          hash    zone → joules billed                        kept
hydra:carbon:zone:rapl            hash    zone → joules of those billed at a power    kept
                                          the worker measured (RAPL, bounded)
hydra:carbon:zone:intensity       hash    zone → g/kWh of its last billed chunk       kept
================================  ======  ==========================================  =====================

The job record also carries the carbon totals of the job (``co2_mg``, ``energy_j``,
``energy_rapl_j``), written by the collector after each accepted result.

A *worker* is named ``<user>/<wid>``: the ACL user (identity, verification, quarantine, credit) and
the worker id (one process; its own speed, inbox and heartbeat).
"""

from __future__ import annotations

PREFIX = "hydra"

JOBS = f"{PREFIX}:jobs"
ACTIVE = f"{PREFIX}:active"
DEADLINES = f"{PREFIX}:deadlines"
LIVE = f"{PREFIX}:live"
IDLE = f"{PREFIX}:idle"
COUNTS = f"{PREFIX}:counts"
ERRORS = f"{PREFIX}:errors"
MONITOR_LEASE = f"{PREFIX}:monitor:lease"
MONITOR_STATS = f"{PREFIX}:monitor:stats"
VOLUNTEERS = f"{PREFIX}:volunteers"
QUARANTINE = f"{PREFIX}:quarantine"
QUARANTINE_UNFINISHED = f"{PREFIX}:quarantine:unfinished"
CUTOFF = f"{PREFIX}:cutoff"
LEDGER = f"{PREFIX}:ledger"
LEDGER_HEADS = f"{PREFIX}:ledger:heads"
LEDGER_STATE = f"{PREFIX}:ledger:state"
CREDIT_BOARD = f"{PREFIX}:credit:board"
CREDIT_RANK = f"{PREFIX}:credit:rank"
CREDIT_TOTALS = f"{PREFIX}:credit:totals"
CARBON_VOLUNTEER = f"{PREFIX}:carbon:volunteer"
CARBON_ZONE = f"{PREFIX}:carbon:zone"
CARBON_ZONE_ENERGY = f"{PREFIX}:carbon:zone:energy"
CARBON_ZONE_RAPL = f"{PREFIX}:carbon:zone:rapl"
CARBON_ZONE_INTENSITY = f"{PREFIX}:carbon:zone:intensity"

ERRORS_KEPT = 200

# -- a volunteer's own keys -------------------------------------------------------------------------


def volunteer_prefix(user: str) -> str:
    return f"{PREFIX}:v:{user}:"


def outbox(user: str) -> str:
    return f"{PREFIX}:v:{user}:outbox"


def inbox(user: str, wid: str) -> str:
    return f"{PREFIX}:v:{user}:w:{wid}:inbox"


def alive(user: str, wid: str) -> str:
    return f"{PREFIX}:v:{user}:w:{wid}:alive"


def parse_volunteer_key(key: str) -> tuple[str, str, str] | None:
    """``hydra:v:<user>:outbox`` → (user, "", "outbox"); ``…:w:<wid>:alive`` → (user, wid, "alive")."""
    if not key.startswith(f"{PREFIX}:v:"):
        return None
    parts = key[len(PREFIX) + 3 :].split(":")
    if len(parts) == 2 and parts[1] == "outbox":
        return parts[0], "", "outbox"
    if len(parts) == 4 and parts[1] == "w" and parts[3] in ("inbox", "alive"):
        return parts[0], parts[2], parts[3]
    return None


# -- trusted keys ------------------------------------------------------------------------------------


def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def chunks(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:chunks"


def pending(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:pending"


def wanted(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:wanted"


def running(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:running"


def late(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:late"


def job_workers(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:workers"


def blobs(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:blobs"


def trace(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:trace"


def data(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:data"


def worker(name: str) -> str:
    return f"{PREFIX}:worker:{name}"


def held(name: str) -> str:
    return f"{PREFIX}:held:{name}"


def zone_rate(zone: str, task: str) -> str:
    """The field of ``hydra:counts`` totalling the measured rates of ``task`` in ``zone`` ('' for
    none): a zone holds no ':' (hellos are checked), so the field splits back at the first one."""
    return f"zrate:{zone or '?'}:{task}"


def parse_zone_rate(field: str) -> tuple[str, str] | None:
    """``(zone, task)`` of a :func:`zone_rate` field, None for any other field."""
    if not field.startswith("zrate:"):
        return None
    zone, _, task = field[6:].partition(":")
    return ("" if zone == "?" else zone), task


# The kinds of device a worker may name in its hello (anything else is taken as "cpu").
DEVICES = ("cpu", "cuda")


def device_rate(device: str, task: str) -> str:
    """The field of a volunteer's record holding its last measured speed of ``task`` on ``device``
    (``cpu`` or ``cuda``: hellos are checked): a GPU's speed must never size a CPU worker."""
    return f"rate:{device}:{task}"


def parse_device_rate(field: str) -> tuple[str, str] | None:
    """``(device, task)`` of a :func:`device_rate` field, None for any other field (a ``rate:<task>``
    field written by Hydra before speeds were kept by device is not one: it is ignored)."""
    if not field.startswith("rate:"):
        return None
    device, sep, task = field[5:].partition(":")
    return (device, task) if sep and device in DEVICES else None


def rates(task: str) -> str:
    return f"{PREFIX}:rates:{task}"


def volunteer(user: str) -> str:
    return f"{PREFIX}:volunteer:{user}"


def user_workers(user: str) -> str:
    return f"{PREFIX}:volunteer:{user}:workers"


def vouched(user: str) -> str:
    return f"{PREFIX}:vouched:{user}"


def emit_gate(job_id: str) -> str:
    return f"{PREFIX}:emit:{job_id}"


SUMMARY_GATE = emit_gate("summary")  # the page's once-a-second cluster summary (no job id looks so)


def worker_name(user: str, wid: str) -> str:
    return f"{user}/{wid}"


def split_worker(name: str) -> tuple[str, str]:
    user, _, wid = name.rpartition("/")
    return user, wid


def assignment(job_id: str, chunk_id: int | str, nonce: int | str) -> str:
    """Member of the deadline and held sets: ``<job>:<chunk>:<nonce>``."""
    return f"{job_id}:{chunk_id}:{nonce}"


def parse_assignment(member: str) -> tuple[str, int, int]:
    """Raises ValueError for a member not of that shape."""
    job_id, chunk_id, nonce = member.split(":")
    return job_id, int(chunk_id), int(nonce)


# -- the credit ledger (hydra.ledger) ---------------------------------------------------------------


def ledger_level(level: int) -> str:
    return f"{PREFIX}:ledger:level:{level}"


def ledger_by_volunteer(volunteer: str) -> str:
    return f"{PREFIX}:ledger:by:{volunteer}"
