"""The Lua scripts that change a job's chunks: each runs atomically inside Redis.

Every script takes the same KEYS, built by :func:`script_keys`:

    1 hydra:job:<job>           2 …:chunks      3 …:tickets     4 …:workers
    5 …:blobs                   6 …:trace       7 …:data        8 hydra:deadlines
    9 hydra:pending            10 rq:queue:hydra

and ARGV[1] = the job id. A chunk is a field of ``…:chunks`` holding JSON
``{first, count, state, attempt, worker, spec}``; its state is ``pending`` (a ticket waits on the
rq queue) or ``running`` (it is in ``hydra:deadlines``). A finished chunk is deleted, so a late or
duplicate completion finds nothing and is ignored: that is the exactly-once rule. Splitting,
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
  redis.call('DEL', KEYS[3])
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
# Returns {'run', first, count, attempt, rest_id, rest_first, rest_count} or {'spec', first, count,
# attempt} or {'gone'}. Claiming a pending chunk may split it: the worker keeps the first `take`
# units and the rest becomes a new pending chunk, for which the caller enqueues a ticket.
CLAIM = (
    _FINISH
    + """
redis.call('SREM', KEYS[3], ARGV[3])
if not active() then return {'gone'} end
local raw = redis.call('HGET', KEYS[2], ARGV[2])
if not raw then return {'gone'} end
local c = cjson.decode(raw)
local now = tonumber(ARGV[5])
local member = ARGV[1] .. ':' .. ARGV[2]
if ARGV[8] == '1' then
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

# ARGV: job, chunk, worker, now, first, count, blob ('' for none), then name/value pairs of
# integer sums to add to the job. Returns 0 (duplicate or stale: ignored), 1 (counted) or
# 2 (counted, and the job is now done).
COMPLETE = (
    _FINISH
    + """
if not active() then return 0 end
local raw = redis.call('HGET', KEYS[2], ARGV[2])
if not raw then return 0 end
local c = cjson.decode(raw)
if c.first ~= tonumber(ARGV[5]) or c.count ~= tonumber(ARGV[6]) then return 0 end
local member = ARGV[1] .. ':' .. ARGV[2]
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[8], member)
redis.call('ZREM', KEYS[9], member)
if c.state == 'pending' then redis.call('HINCRBY', KEYS[1], 'units_claimed', c.count) end
local done = redis.call('HINCRBY', KEYS[1], 'units_done', c.count)
local point = tostring(done)
for i = 8, #ARGV, 2 do
  local total = redis.call('HINCRBY', KEYS[1], 'sum:' .. ARGV[i], ARGV[i + 1])
  point = point .. ' ' .. total
end
redis.call('RPUSH', KEYS[6], point)
redis.call('LTRIM', KEYS[6], -10000, -1)
redis.call('HINCRBY', KEYS[4], ARGV[3], c.count)
if ARGV[7] ~= '' then redis.call('HSET', KEYS[5], ARGV[2], ARGV[7]) end
if done >= tonumber(redis.call('HGET', KEYS[1], 'units_total')) then
  finish('done', ARGV[4], '')
  return 2
end
return 1
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
    return [*keys.job_keys(job_id), keys.DEADLINES, keys.PENDING, rq_queue_key]
