"""The Lua scripts that change a job's chunks: each runs atomically inside Redis.

Every script takes the same KEYS, built by :func:`script_keys`:

    1 hydra:job:<job>           2 …:chunks      3 …:tickets     4 …:workers
    5 …:blobs                   6 …:trace       7 …:data        8 hydra:deadlines
    9 hydra:pending            10 rq:queue:hydra  11 hydra:quarantine
   12 hydra:job:<job>:unverified

and ARGV[1] = the job id. A chunk is a field of ``…:chunks`` holding JSON
``{first, count, state, attempt, worker, spec, results, need}``; its state is ``pending`` (a ticket
waits on the rq queue), ``running`` (it is in ``hydra:deadlines``) or, for verified jobs,
``verifying`` (one result is in, ``results`` maps workers to result digests, and a copy must agree).
A finished chunk is deleted, so a late or duplicate completion finds nothing and is ignored: that
is the exactly-once rule.

Verification (BOINC's validation, made exact since results are bit-reproducible): with
``verify = 2`` every chunk counts only when two distinct workers report the same digest; with
``verify = auto`` a chunk is checked with probability max(0.05, 1 / (1 + clean / 10)), ``clean``
being the worker's count of confirmed results. A worker whose digest loses is quarantined
(``hydra:quarantine``: its claims and results are refused) and the results it alone vouched for in
that job (``…:unverified``) are subtracted and their ranges requeued. Splitting,
completing, requeueing and ending a job each happen in one script, so no observer ever sees a
block of samples counted twice, lost, or both running and pending.

Chunk JSON holds only integers below 10**13 (cjson keeps 14 significant digits).
"""

from __future__ import annotations

from redis import Redis
from redis.commands.core import Script

from hydra import keys

# Shared by every script: end a job (done, failed or cancelled). Drops its live chunks from the
# deadline and pending sets, takes its unused tickets off the rq queue, and sets the expiry of
# what is kept (the record, the result blobs, the trace).
_FINISH = """
local function finish(state, now, reason)
  local job_id = ARGV[1]
  for _, id in ipairs(redis.call('HKEYS', KEYS[2])) do
    redis.call('ZREM', KEYS[8], job_id .. ':' .. id)
    redis.call('ZREM', KEYS[9], job_id .. ':' .. id)
  end
  redis.call('DEL', KEYS[2])
  local rq_prefix = string.sub(KEYS[10], 1, string.find(KEYS[10], ':') - 1) .. ':job:'
  for _, ticket in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    if redis.call('LREM', KEYS[10], 0, ticket) > 0 then redis.call('DEL', rq_prefix .. ticket) end
  end
  redis.call('DEL', KEYS[3], KEYS[12])
  redis.call('HSET', KEYS[1], 'state', state, 'finished', now)
  if reason ~= '' then redis.call('HSET', KEYS[1], 'error', reason) end
  local ttl = tonumber(redis.call('HGET', KEYS[1], 'result_ttl'))
  for i = 4, 7 do redis.call('EXPIRE', KEYS[i], ttl) end
  redis.call('EXPIRE', KEYS[1], ttl)
end
local function active()
  local state = redis.call('HGET', KEYS[1], 'state')
  return state == 'queued' or state == 'running'
end
"""

# ARGV: job, chunk, ticket, worker, now, take, deadline, speculative, pending_grace
# Returns {'run', first, count, attempt, rest_id, rest_first, rest_count}, {'spec', first, count,
# attempt}, {'gone'} (nothing to do), {'pass'} (a copy this worker may not run: it gave the first
# result) or {'quarantined'} (this worker may run nothing). Claiming a pending chunk may split it:
# the worker keeps the first `take` units and the rest becomes a new pending chunk, for which the
# caller enqueues a ticket.
CLAIM = (
    _FINISH
    + """
redis.call('SREM', KEYS[3], ARGV[3])
if not active() then return {'gone'} end
if redis.call('SISMEMBER', KEYS[11], ARGV[4]) == 1 then return {'quarantined'} end
local raw = redis.call('HGET', KEYS[2], ARGV[2])
if not raw then return {'gone'} end
local c = cjson.decode(raw)
local now = tonumber(ARGV[5])
local member = ARGV[1] .. ':' .. ARGV[2]
if ARGV[8] == '1' then
  -- A copy: of a slow running chunk (the tail), or of a result that needs confirming.
  if c.state == 'verifying' then
    if c.results[ARGV[4]] then return {'pass'} end
    redis.call('ZADD', KEYS[9], tonumber(ARGV[7]), member)
    return {'spec', c.first, c.count, c.attempt}
  end
  if c.state ~= 'running' or c.worker == ARGV[4] or c.spec then return {'gone'} end
  c.spec = ARGV[4]
  redis.call('HSET', KEYS[2], ARGV[2], cjson.encode(c))
  return {'spec', c.first, c.count, c.attempt}
end
if c.state ~= 'pending' then return {'gone'} end
redis.call('ZREM', KEYS[9], member)
local take = math.min(math.max(tonumber(ARGV[6]), 1), c.count)
local rest_id, rest_first, rest_count = -1, 0, 0
if take < c.count then
  rest_id = redis.call('HINCRBY', KEYS[1], 'next_chunk', 1) - 1
  rest_first, rest_count = c.first + take, c.count - take
  redis.call('HSET', KEYS[2], rest_id, cjson.encode(
    {first = rest_first, count = rest_count, state = 'pending', attempt = 0}))
  redis.call('ZADD', KEYS[9], now + tonumber(ARGV[9]), ARGV[1] .. ':' .. rest_id)
  c.count = take
end
c.state, c.worker, c.started = 'running', ARGV[4], now
redis.call('HSET', KEYS[2], ARGV[2], cjson.encode(c))
redis.call('ZADD', KEYS[8], tonumber(ARGV[7]), member)
redis.call('HINCRBY', KEYS[1], 'units_claimed', take)
if redis.call('HGET', KEYS[1], 'state') == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'running', 'started', ARGV[5])
end
return {'run', c.first, c.count, c.attempt, rest_id, rest_first, rest_count}
"""
)

# ARGV: job, chunk, worker, now, first, count, blob ('' for none), result digest, then name/value
# pairs of integer sums to add to the job. Returns {0} (duplicate, stale or quarantined: ignored),
# {1} (counted), {2} (counted, and the job is now done) or {3} (kept, waiting for a copy to agree).
COMPLETE = (
    _FINISH
    + """
if not active() or redis.call('SISMEMBER', KEYS[11], ARGV[3]) == 1 then return {0} end
if #ARGV[7] > 16777216 then return {0} end  -- no task makes a result this large
local raw = redis.call('HGET', KEYS[2], ARGV[2])
if not raw then return {0} end
local c = cjson.decode(raw)
if c.first ~= tonumber(ARGV[5]) or c.count ~= tonumber(ARGV[6]) then return {0} end
local member = ARGV[1] .. ':' .. ARGV[2]
local now = tonumber(ARGV[4])
local worker_prefix = string.sub(KEYS[11], 1, string.find(KEYS[11], ':')) .. 'worker:'
local mode = redis.call('HGET', KEYS[1], 'verify') or '1'
local need = 1
if c.results then
  need = c.need
elseif mode == '2' then
  need = 2
elseif mode == 'auto' then
  -- Check a fraction of each worker's chunks, smaller as its record of agreeing results grows.
  local clean = tonumber(redis.call('HGET', worker_prefix .. ARGV[3], 'clean') or '0')
  local p = math.max(0.05, 1 / (1 + clean / 10))
  local salt = redis.call('HGET', KEYS[1], 'salt') or ''
  local h = tonumber(string.sub(redis.sha1hex(salt .. ':' .. ARGV[2] .. ':' .. ARGV[3]), 1, 8), 16)
  if h / 4294967296 < p then need = 2 end
end
if need > 1 then
  c.results = c.results or {}
  if c.results[ARGV[3]] then return {0} end
  c.results[ARGV[3]] = ARGV[8]
  local agree, losers = 0, {}
  for w, d in pairs(c.results) do
    if d == ARGV[8] then agree = agree + 1 else table.insert(losers, w) end
  end
  if agree < need then
    -- Not yet confirmed: wait for a copy run by another worker (the caller enqueues its ticket).
    c.state, c.need, c.worker, c.spec = 'verifying', need, nil, nil
    redis.call('HSET', KEYS[2], ARGV[2], cjson.encode(c))
    redis.call('ZREM', KEYS[8], member)
    redis.call('ZADD', KEYS[9], now + 5, member)
    return {3}
  end
  for w, d in pairs(c.results) do
    if d == ARGV[8] then redis.call('HINCRBY', worker_prefix .. w, 'clean', 1) end
  end
  -- The minority cheated or broke: quarantine it and take back what it alone vouched for.
  for _, loser in ipairs(losers) do
    redis.call('SADD', KEYS[11], loser)
    local entries = redis.call('HGETALL', KEYS[12])
    for k = 1, #entries, 2 do
      local e = cjson.decode(entries[k + 1])
      if e.worker == loser then
        for name, value in pairs(e.sums) do redis.call('HINCRBY', KEYS[1], 'sum:' .. name, -value) end
        redis.call('HINCRBY', KEYS[1], 'units_done', -e.count)
        redis.call('HINCRBY', KEYS[1], 'units_claimed', -e.count)
        redis.call('HINCRBY', KEYS[4], loser, -e.count)
        redis.call('HDEL', KEYS[5], entries[k])
        redis.call('HDEL', KEYS[12], entries[k])
        local id = redis.call('HINCRBY', KEYS[1], 'next_chunk', 1) - 1
        local again = {first = e.first, count = e.count, state = 'pending', attempt = 0}
        redis.call('HSET', KEYS[2], id, cjson.encode(again))
        redis.call('ZADD', KEYS[9], now, ARGV[1] .. ':' .. id)
      end
    end
  end
end
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[8], member)
redis.call('ZREM', KEYS[9], member)
if c.state == 'pending' then redis.call('HINCRBY', KEYS[1], 'units_claimed', c.count) end
local done = redis.call('HINCRBY', KEYS[1], 'units_done', c.count)
local point = tostring(done)
local sums = {}
for i = 9, #ARGV, 2 do
  local total = redis.call('HINCRBY', KEYS[1], 'sum:' .. ARGV[i], ARGV[i + 1])
  sums[ARGV[i]] = tonumber(ARGV[i + 1])
  point = point .. ' ' .. total
end
if mode == 'auto' and need == 1 then
  redis.call('HSET', KEYS[12], ARGV[2], cjson.encode({worker = ARGV[3], first = c.first, count = c.count, sums = sums}))
end
redis.call('RPUSH', KEYS[6], point)
redis.call('LTRIM', KEYS[6], -10000, -1)
redis.call('HINCRBY', KEYS[4], ARGV[3], c.count)
if ARGV[7] ~= '' then redis.call('HSET', KEYS[5], ARGV[2], ARGV[7]) end
if done >= tonumber(redis.call('HGET', KEYS[1], 'units_total')) then
  finish('done', ARGV[4], '')
  return {2}
end
return {1}
"""
)

# ARGV: job, chunk, now, reason, count_attempt (0/1), expected worker ('' for any), pending_grace
# Puts a running chunk back to pending. Returns {0} when there is nothing to do, {1, first, count,
# attempt} when the caller must enqueue a ticket, {2} when the chunk ran out of attempts and the
# job failed.
REQUEUE = (
    _FINISH
    + """
local member = ARGV[1] .. ':' .. ARGV[2]
local raw = redis.call('HGET', KEYS[2], ARGV[2])
if not raw or not active() then
  redis.call('ZREM', KEYS[8], member)
  return {0}
end
local c = cjson.decode(raw)
if c.state ~= 'running' or (ARGV[6] ~= '' and c.worker ~= ARGV[6]) then return {0} end
if ARGV[5] == '1' then c.attempt = c.attempt + 1 end
local max_attempts = tonumber(redis.call('HGET', KEYS[1], 'max_attempts'))
if c.attempt >= max_attempts then
  finish('failed', ARGV[3], 'chunk ' .. ARGV[2] .. ' failed ' .. c.attempt .. ' times: ' .. ARGV[4])
  return {2}
end
c.state, c.worker, c.spec, c.started = 'pending', nil, nil, nil
redis.call('HSET', KEYS[2], ARGV[2], cjson.encode(c))
redis.call('ZREM', KEYS[8], member)
redis.call('ZADD', KEYS[9], tonumber(ARGV[3]) + tonumber(ARGV[7]), member)
redis.call('HINCRBY', KEYS[1], 'units_claimed', -c.count)
redis.call('HINCRBY', KEYS[1], 'requeued', 1)
return {1, c.first, c.count, c.attempt}
"""
)

# ARGV: job, new state ('cancelled' or 'failed'), now, reason. Returns 1 if the job was active.
END = (
    _FINISH
    + """
if not active() then return 0 end
finish(ARGV[2], ARGV[3], ARGV[4])
return 1
"""
)


class Scripts:
    """The scripts registered once on a connection (huey's pattern): call them by name."""

    def __init__(self, redis: Redis) -> None:
        self.claim: Script = redis.register_script(CLAIM)
        self.complete: Script = redis.register_script(COMPLETE)
        self.requeue: Script = redis.register_script(REQUEUE)
        self.end: Script = redis.register_script(END)


def script_keys(job_id: str, rq_queue_key: str) -> list[str]:
    return [
        *keys.job_keys(job_id),
        keys.DEADLINES,
        keys.PENDING,
        rq_queue_key,
        keys.QUARANTINE,
        keys.unverified(job_id),
    ]
