"""The Lua scripts that change job state: each runs atomically inside Redis, called only by trusted
processes (a volunteer's credential cannot run scripts at all).

A chunk is a field of ``hydra:job:<job>:chunks`` holding JSON::

    {first, count, state, attempt, credit, holders, results, need}

``state`` is ``pending`` (in ``…:pending``, nobody has it), ``running`` (one or more workers hold
it: ``holders`` maps worker → {nonce, at}) or ``verifying`` (``results`` maps volunteer → digest and
``need`` agreeing volunteers are required; it sits in ``…:wanted`` until another volunteer gets a
copy). Every assignment has a nonce, and a result counts only if it quotes the nonce of an
assignment its worker still holds; an accepted chunk is deleted, so a late, duplicate or forged
result finds nothing: that is the exactly-once rule.

Verification (BOINC's validation, made exact since results are bit-reproducible): with
``verify = 2`` a chunk counts when two distinct volunteers report the same digest; with
``verify = auto`` the monitor decides, with a secret salt no volunteer can read, to check a
fraction of each volunteer's results, smaller as its record of agreeing results grows. A volunteer
whose digest loses is quarantined; the caller then redoes every result it alone vouched for
(``hydra:vouched:<user>``), in every job, with :data:`REDO`.

Chunk JSON holds only integers below 10**13 (cjson keeps 14 significant digits).
"""

from __future__ import annotations

import functools

from redis import Redis
from redis.commands.core import Script

from hydra import keys
from hydra.carbon.accounting import LUA as CARBON_LUA
from hydra.tasks.reduce import LUA as REDUCE_LUA

# Shared by the scripts that work on one job. KEYS (built by job_script_keys):
#   1 hydra:job:<job>   2 …:chunks   3 …:pending   4 …:wanted   5 …:workers   6 …:blobs
#   7 …:trace           8 …:data     9 hydra:deadlines   10 hydra:active   11 hydra:quarantine
#  12 hydra:ledger    13 …:running (chunk id → when its fastest holder should finish)
# ARGV[1] is always the job id.
_COMMON = """
local job_id = ARGV[1]
local function fmt(n) return string.format('%d', n) end
local function member(chunk_id, nonce) return job_id .. ':' .. chunk_id .. ':' .. nonce end
local function held_key(w) return '{HELD}' .. w end
local function volunteer_key(u) return '{VOLUNTEER}' .. u end
local function drop_holders(chunk_id, c)
  for w, h in pairs(c.holders or {}) do
    redis.call('ZREM', KEYS[9], member(chunk_id, h.nonce))
    redis.call('SREM', held_key(w), member(chunk_id, h.nonce))
  end
end
local function finish(state, now, reason)
  for _, id in ipairs(redis.call('HKEYS', KEYS[2])) do
    drop_holders(id, cjson.decode(redis.call('HGET', KEYS[2], id)))
  end
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[13])
  redis.call('ZREM', KEYS[10], job_id)
  redis.call('HSET', KEYS[1], 'state', state, 'finished', now)
  if reason ~= '' then redis.call('HSET', KEYS[1], 'error', reason) end
  local ttl = tonumber(redis.call('HGET', KEYS[1], 'result_ttl'))
  for i = 5, 8 do redis.call('EXPIRE', KEYS[i], ttl) end
  redis.call('EXPIRE', KEYS[1], ttl)
end
local function active()
  local state = redis.call('HGET', KEYS[1], 'state')
  return state == 'queued' or state == 'running'
end
-- A holder let go of chunk c: while others hold it, it stays theirs; once nobody does, it waits
-- for a copy (results waiting to be confirmed) or is pending again, never running with no holder.
-- Returns 3 (still held, or waiting for a copy) or 1 (pending again).
local function let_go(id, c, now)
  if next(c.holders) ~= nil then
    redis.call('HSET', KEYS[2], id, cjson.encode(c))
    return 3
  end
  redis.call('ZREM', KEYS[13], id)
  if c.results then
    c.state = 'verifying'
    redis.call('HSET', KEYS[2], id, cjson.encode(c))
    redis.call('ZADD', KEYS[4], now, id)
    return 3
  end
  c.state, c.holders = 'pending', nil
  redis.call('HSET', KEYS[2], id, cjson.encode(c))
  redis.call('ZADD', KEYS[3], c.first, id)
  redis.call('ZREM', KEYS[4], id)
  redis.call('HINCRBY', KEYS[1], 'units_claimed', -c.count)
  redis.call('HINCRBY', KEYS[1], 'requeued', 1)
  return 1
end
local function ledger(kind, user, c, digest, now, task)
  if c.credit == nil then return end
  redis.call('RPUSH', KEYS[12], '{"kind":"' .. kind .. '","volunteer":"' .. user .. '","job":"' .. job_id ..
    '","task":"' .. (task or redis.call('HGET', KEYS[1], 'task')) .. '","first":' .. fmt(c.first) .. ',"count":' ..
    fmt(c.count) .. ',"credit":' .. fmt(c.credit) .. ',"digest":"' .. digest .. '","time":' .. now .. '}')
end
"""

# Key names built in hydra.keys, not spelled again here (the scripts reach a worker's and a
# volunteer's keys by name, since which ones is decided inside the script).
_COMMON = _COMMON.replace("{HELD}", keys.held("")).replace("{VOLUNTEER}", keys.volunteer(""))

# ARGV: job, chunk, kind ('new' or 'copy'), expect_first, take, worker, user, now, deadline, credit,
#       expected end (when this worker should have the result)
# Extra KEYS: 14 hydra:held:<worker>  15 the worker's inbox  16 hydra:idle
# Gives the worker units [first, first + take) of a pending chunk (splitting it: the rest stays
# pending under the same id) or, for 'copy', a copy of a running or verifying chunk that no
# worker of the same volunteer holds or has answered. Pushes the descriptor into the worker's
# inbox. Returns {'ok', chunk, first, count, nonce} or {'no', why}.
ASSIGN = (
    _COMMON
    + """
local now = tonumber(ARGV[8])
local state, spec = unpack(redis.call('HMGET', KEYS[1], 'state', 'spec'))
if state ~= 'queued' and state ~= 'running' then return {'no', 'ended'} end
if redis.call('SISMEMBER', KEYS[11], ARGV[7]) == 1 then return {'no', 'quarantined'} end
local raw = redis.call('HGET', KEYS[2], ARGV[2])
if not raw then return {'no', 'gone'} end
local c = cjson.decode(raw)
local id = ARGV[2]
local nonce = redis.call('HINCRBY', KEYS[1], 'next_nonce', 1)
if ARGV[3] == 'copy' then
  if c.state == 'pending' then return {'no', 'pending'} end
  for w, _ in pairs(c.holders or {}) do
    if string.sub(w, 1, #ARGV[7] + 1) == ARGV[7] .. '/' then return {'no', 'same volunteer'} end
  end
  if c.results and c.results[ARGV[7]] then return {'no', 'same volunteer'} end
  if c.state == 'verifying' then c.state = 'running'; redis.call('ZREM', KEYS[4], id) end
  if c.state == 'running' and c.results == nil then redis.call('ZREM', KEYS[4], id) end
else
  if c.state ~= 'pending' or c.first ~= tonumber(ARGV[4]) then return {'no', 'moved'} end
  -- A volunteer that just failed this chunk gets it back only after a grace period (another
  -- volunteer takes it meanwhile), so one volunteer cannot fail a job, yet a lone one still can
  -- find a chunk that always fails.
  local failed = c.failed_by and c.failed_by[ARGV[7]]
  if failed and tonumber(ARGV[8]) - failed < 5 then return {'no', 'failed here'} end
  local take = math.min(math.max(tonumber(ARGV[5]), 1), c.count)
  if take < c.count then
    local rest = {first = c.first + take, count = c.count - take, state = 'pending', attempt = 0}
    redis.call('HSET', KEYS[2], id, cjson.encode(rest))
    redis.call('ZADD', KEYS[3], rest.first, id)
    id = tostring(redis.call('HINCRBY', KEYS[1], 'next_chunk', 1) - 1)
    c.count = take
  else
    redis.call('ZREM', KEYS[3], id)
  end
  c.state, c.credit = 'running', tonumber(ARGV[10])
  redis.call('HINCRBY', KEYS[1], 'units_claimed', c.count)
  if state == 'queued' then
    redis.call('HSET', KEYS[1], 'state', 'running', 'started', ARGV[8])
  end
end
c.holders = c.holders or {}
c.holders[ARGV[6]] = {nonce = nonce, at = now}
redis.call('HSET', KEYS[2], id, cjson.encode(c))
local m = member(id, nonce)
redis.call('ZADD', KEYS[9], tonumber(ARGV[9]), m)
redis.call('SADD', KEYS[14], m)
redis.call('ZREM', KEYS[16], ARGV[6])
if ARGV[3] == 'copy' then
  redis.call('ZADD', KEYS[13], 'LT', tonumber(ARGV[11]), id)
else
  redis.call('ZADD', KEYS[13], tonumber(ARGV[11]), id)
end
redis.call('RPUSH', KEYS[15], '{"t":"chunk","job":"' .. job_id .. '","chunk":' .. id .. ',"a":' .. fmt(nonce) ..
  ',"first":' .. fmt(c.first) .. ',"count":' .. fmt(c.count) .. ',' .. spec .. '}')
return {'ok', id, fmt(c.first), fmt(c.count), fmt(nonce)}
"""
)

# ARGV: job, chunk, nonce, worker, user, now, digest, blob ('' for none), check ('0'/'1'),
#       display size of the chunk (samples, pixels), the field of hydra:counts that totals it
#       (done:<unit>), the six arguments of the chunk's CO2 (hydra.carbon.accounting: user, zone,
#       mg, J, measured J, g/kWh; the first '' for none), then (name, value, reduction) triples of
#       the chunk's integer results (hydra.tasks.reduce: sum, max, min, at:<name>).
# Extra KEYS: 14 hydra:held:<worker>  15 hydra:vouched:<user>  16 hydra:worker:<worker>  17 hydra:counts
#             18-22 the CO2 totals: per volunteer, per zone, zone energy, zone measured energy, zone intensity
# The worker's chunk count and the cluster's done counter move here, with the outcome they depend on.
# CO2 is billed for any result of an assignment the worker holds, accepted or not (a copy that lost
# the race spent its energy too), before anything else: a job never reads done without it.
# check = '1': this result must be confirmed by another volunteer (verify 2, or a spot check of
# verify auto decided by the caller). Returns {0, why} (stale, duplicate, quarantined: ignored),
# {1, at} (accepted), {2, at} (accepted and the job is done), {3, at} (kept, waiting for a copy to
# agree), each with the time the assignment was made; after {1}/{2}, the volunteers who lost a
# disagreement follow (quarantined now: the caller redoes what they vouched for).
ACCEPT = (
    _COMMON
    + REDUCE_LUA
    + CARBON_LUA
    + """
local now = ARGV[6]
local user, worker = ARGV[5], ARGV[4]
local raw = redis.call('HGET', KEYS[2], ARGV[2])
if not raw then
  redis.call('SREM', KEYS[14], member(ARGV[2], ARGV[3]))
  redis.call('ZREM', KEYS[9], member(ARGV[2], ARGV[3]))
  return {0, 'no such chunk'}
end
local c = cjson.decode(raw)
local h = (c.holders or {})[worker]
if not h or fmt(h.nonce) ~= ARGV[3] then return {0, 'not assigned'} end
if ARGV[12] ~= '' then
  add_totals({KEYS[1], KEYS[18], KEYS[19], KEYS[20], KEYS[21], KEYS[22]},
    {ARGV[12], ARGV[13], ARGV[14], ARGV[15], ARGV[16], ARGV[17]})
end
local at = tostring(h.at)
c.holders[worker] = nil
redis.call('ZREM', KEYS[9], member(ARGV[2], ARGV[3]))
redis.call('SREM', KEYS[14], member(ARGV[2], ARGV[3]))
-- The job record's fields this script reads, in one call.
local state, task, verify, units_total, result_ttl =
  unpack(redis.call('HMGET', KEYS[1], 'state', 'task', 'verify', 'units_total', 'result_ttl'))
if state ~= 'queued' and state ~= 'running' then return {0, 'job ended'} end
if redis.call('SISMEMBER', KEYS[11], user) == 1 then
  -- Quarantined since it was given the chunk (perhaps earlier in this very pipeline, before the
  -- caller could requeue its work): its result is ignored and the chunk goes on without it.
  let_go(ARGV[2], c, now)
  return {0, 'quarantined'}
end
local need = c.need or 1
if ARGV[9] == '1' and need < 2 then need = 2 end
local losers = {}
if need > 1 then
  c.results = c.results or {}
  c.results[user] = ARGV[7]
  local tally = {}
  for _, d in pairs(c.results) do tally[d] = (tally[d] or 0) + 1 end
  if (tally[ARGV[7]] or 0) < need then
    -- Not confirmed yet: wanted by another volunteer (a third one, after a disagreement).
    c.need = need
    redis.call('HINCRBY', KEYS[16], 'chunks', 1)
    if next(c.holders) == nil then
      c.state = 'verifying'
      redis.call('ZADD', KEYS[4], now, ARGV[2])
      redis.call('ZREM', KEYS[13], ARGV[2])
    end
    redis.call('HSET', KEYS[2], ARGV[2], cjson.encode(c))
    return {3, at}
  end
  for u, d in pairs(c.results) do
    if d == ARGV[7] then
      redis.call('HINCRBY', volunteer_key(u), 'clean', 1)
      ledger('grant', u, c, d, now, task)
    else
      redis.call('SADD', KEYS[11], u)
      redis.call('ZADD', '{UNFINISHED}', 'NX', now, u)  -- the monitor's passes finish what this starts
      redis.call('HSET', volunteer_key(u), 'state', 'quarantined', 'reason',
        'result of job ' .. job_id .. ' chunk ' .. ARGV[2] .. ' disagreed with ' .. need .. ' volunteers')
      table.insert(losers, u)
    end
  end
else
  ledger('grant', user, c, ARGV[7], now, task)
end
drop_holders(ARGV[2], c)
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[13], ARGV[2])
local done = redis.call('HINCRBY', KEYS[1], 'units_done', c.count)
local shown = redis.call('HINCRBY', KEYS[1], 'display_done', ARGV[10])
redis.call('HINCRBY', KEYS[16], 'chunks', 1)
if ARGV[10] ~= '0' then redis.call('HINCRBY', KEYS[17], ARGV[11], ARGV[10]) end
local point = tostring(shown)
local sums = {'"display_done":' .. ARGV[10]}
local added = reduce_sums(KEYS[1], ARGV, 18)
for i = 18, #ARGV, 3 do
  -- Only added sums can be taken back later (REDO); a max or min stays as it was.
  if ARGV[i + 2] == 'sum' then table.insert(sums, '"' .. ARGV[i] .. '":' .. ARGV[i + 1]) end
  local total = added[ARGV[i]]  -- a Lua number: exact below 2^53, else read back as stored
  if total and math.abs(total) < 2^53 then
    total = fmt(total)
  else
    total = redis.call('HGET', KEYS[1], 'sum:' .. ARGV[i])
  end
  point = point .. ' ' .. (total or '')
end
if need == 1 and verify == 'auto' then
  -- Accepted on one volunteer's word: remembered, so it can be redone if that volunteer is caught.
  redis.call('HSET', KEYS[15], job_id .. ':' .. ARGV[2], '{"first":' .. fmt(c.first) .. ',"count":' ..
    fmt(c.count) .. ',"credit":' .. fmt(c.credit or 0) .. ',"digest":"' .. ARGV[7] .. '","sums":{' ..
    table.concat(sums, ',') .. '}}')
  redis.call('EXPIRE', KEYS[15], tonumber(result_ttl))
end
if redis.call('RPUSH', KEYS[7], point) > 10100 then redis.call('LTRIM', KEYS[7], -10000, -1) end
redis.call('HINCRBY', KEYS[5], user, c.count)
if ARGV[8] ~= '' then redis.call('HSET', KEYS[6], ARGV[2], ARGV[8]) end
local outcome = 1
if done >= tonumber(units_total) then
  finish('done', now, '')
  outcome = 2
end
local reply = {outcome, at}
for _, u in ipairs(losers) do table.insert(reply, u) end
return reply
"""
).replace("{UNFINISHED}", keys.QUARANTINE_UNFINISHED)

# ARGV: job, chunk, nonce, worker, now, reason, count_attempt ('0'/'1'), user
# ``failed_by`` remembers when each volunteer failed the chunk: ASSIGN gives it to another volunteer
# first, so no single volunteer can fail someone else's job by failing its chunks.
# Extra KEYS: 14 hydra:held:<worker>
# The worker lost its assignment (it died, was cut off, or its kernel raised). A chunk that
# nobody else holds goes back to pending. Returns {0} (nothing to do), {1} (pending again),
# {2} (out of attempts: the job failed), {3} (others still hold it, or it awaits a copy).
REQUEUE = (
    _COMMON
    + """
local m = member(ARGV[2], ARGV[3])
redis.call('ZREM', KEYS[9], m)
redis.call('SREM', KEYS[14], m)
local raw = redis.call('HGET', KEYS[2], ARGV[2])
if not raw or not active() then return {0} end
local c = cjson.decode(raw)
local h = (c.holders or {})[ARGV[4]]
if not h or fmt(h.nonce) ~= ARGV[3] then return {0} end
c.holders[ARGV[4]] = nil
if ARGV[7] == '1' then
  c.attempt = c.attempt + 1
  if ARGV[8] and ARGV[8] ~= '' then
    c.failed_by = c.failed_by or {}
    c.failed_by[ARGV[8]] = tonumber(ARGV[5])
  end
end
local max_attempts = tonumber(redis.call('HGET', KEYS[1], 'max_attempts'))
if c.attempt >= max_attempts then
  finish('failed', ARGV[5], 'chunk ' .. ARGV[2] .. ' failed ' .. c.attempt .. ' times: ' .. ARGV[6])
  return {2}
end
return {let_go(ARGV[2], c, ARGV[5])}
"""
)

# ARGV: job, chunk, nonce, worker, now
# Extra KEYS: 14 hydra:held:<worker>  15 the worker's inbox
# Work stealing at the tail of a job: takes back a chunk its only holder has not started, i.e. whose
# descriptor still waits in the holder's inbox (removed here, atomically, so the holder never sees
# it), and makes it pending again for a worker expected to finish it sooner. No attempt is counted.
# Returns 1 if taken back, 0 if the holder already took it (or anything else changed).
STEAL = (
    _COMMON
    + """
local raw = redis.call('HGET', KEYS[2], ARGV[2])
if not raw or not active() then return 0 end
local c = cjson.decode(raw)
local h = (c.holders or {})[ARGV[4]]
if c.state ~= 'running' or c.results or not h or fmt(h.nonce) ~= ARGV[3] then return 0 end
for w, _ in pairs(c.holders) do if w ~= ARGV[4] then return 0 end end
local needle = '"job":"' .. job_id .. '","chunk":' .. ARGV[2] .. ',"a":' .. ARGV[3] .. ','
local found = nil
for _, message in ipairs(redis.call('LRANGE', KEYS[15], 0, 15)) do
  if string.find(message, needle, 1, true) then found = message; break end
end
if not found or redis.call('LREM', KEYS[15], 1, found) ~= 1 then return 0 end
local m = member(ARGV[2], ARGV[3])
redis.call('ZREM', KEYS[9], m)
redis.call('SREM', KEYS[14], m)
redis.call('ZREM', KEYS[13], ARGV[2])
c.state, c.holders = 'pending', nil
redis.call('HSET', KEYS[2], ARGV[2], cjson.encode(c))
redis.call('ZADD', KEYS[3], c.first, ARGV[2])
redis.call('HINCRBY', KEYS[1], 'units_claimed', -c.count)
redis.call('HINCRBY', KEYS[1], 'stolen', 1)
return 1
"""
)

# KEYS: 1 hydra:job:<job>  2 …:chunks  3 …:pending  4 …:wanted   (read only)  ARGV: how many heads
# What a job has to give, in one round trip: up to 8 chunks wanting a copy, the units claimed so far,
# and the first pending chunks' ids and records (enough to plan the next assignments of a batch of
# workers: ASSIGN splits the head, so the next piece starts where the last one ended).
# Returns {wanted, claimed, id, record, id, record, ...}.
PEEK = """
local out = {redis.call('ZRANGE', KEYS[4], 0, 7), redis.call('HGET', KEYS[1], 'units_claimed') or false}
for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, tonumber(ARGV[1]) - 1)) do
  table.insert(out, id)
  table.insert(out, redis.call('HGET', KEYS[2], id) or false)
end
return out
"""

# ARGV: job, new state ('cancelled' or 'failed'), now, reason. Returns 1 if the job was active.
END = (
    _COMMON
    + """
if not active() then return 0 end
finish(ARGV[2], ARGV[3], ARGV[4])
return 1
"""
)

# ARGV: job, chunk key ("<job>:<chunk>" in the vouched hash), user, now
# Extra KEYS: 14 hydra:vouched:<user>
# Takes back one result a quarantined volunteer alone vouched for: subtracts its sums, makes its
# range pending again (reopening the job if it had finished) and writes a ledger reversal.
# Returns 1 if something was taken back.
REDO = (
    _COMMON
    + """
local raw = redis.call('HGET', KEYS[14], ARGV[2])
redis.call('HDEL', KEYS[14], ARGV[2])
if not raw or redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'failed' or state == 'cancelled' then return 0 end
local e = cjson.decode(raw)
for name, value in pairs(e.sums) do
  local field = name == 'display_done' and name or 'sum:' .. name
  redis.call('HINCRBY', KEYS[1], field, -value)
end
redis.call('HINCRBY', KEYS[1], 'units_done', -e.count)
redis.call('HINCRBY', KEYS[5], ARGV[3], -e.count)
local chunk_id = string.sub(ARGV[2], #job_id + 2)
redis.call('HDEL', KEYS[6], chunk_id)
local id = tostring(redis.call('HINCRBY', KEYS[1], 'next_chunk', 1) - 1)
redis.call('HSET', KEYS[2], id, cjson.encode({first = e.first, count = e.count, state = 'pending', attempt = 0}))
redis.call('ZADD', KEYS[3], e.first, id)
redis.call('HINCRBY', KEYS[1], 'units_claimed', -e.count)
if state == 'done' then
  for i = 1, 8 do redis.call('PERSIST', KEYS[i]) end
  redis.call('HSET', KEYS[1], 'state', 'running')
  redis.call('HDEL', KEYS[1], 'finished')
  redis.call('ZADD', KEYS[10], redis.call('HGET', KEYS[1], 'created'), job_id)
end
ledger('reverse', ARGV[3], e, e.digest, ARGV[4])
return 1
"""
)

# KEYS: 1 hydra:cutoff  2 a volunteer's outbox.  ARGV: user, batch, most messages an outbox may hold.
# Takes up to ``batch`` messages from the outbox in one round trip: {0, length, messages}; {1} if the
# volunteer is cut off; {2, length} if the outbox holds more than allowed (a flood). An emptied outbox
# is deleted rather than popped, so no list notification goes back to the monitor, which listens
# for the pushes into outboxes only.
TAKE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {1} end
local length = redis.call('LLEN', KEYS[2])
if length > tonumber(ARGV[3]) then return {2, length} end
local batch = tonumber(ARGV[2])
local messages = redis.call('LRANGE', KEYS[2], 0, batch - 1)
if length <= batch then redis.call('DEL', KEYS[2]) else redis.call('LTRIM', KEYS[2], batch, -1) end
return {0, length, messages}
"""


# KEYS: 1 …:running  2 …:chunks   (read only)
# The running chunk of a job expected to end last, which is all a worker could steal or copy at the
# job's tail (the others end sooner): {its expected end, its record}, or false where none runs.
LAST_RUNNING = """
local last = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #last == 0 then return false end
return {last[2], redis.call('HGET', KEYS[2], last[1])}
"""


# KEYS: 1 hydra:counts   ARGV: n, the n fields a leaving worker was counted under, then (field, rate)
# pairs of the measured rates it added to the totals.
# Takes the worker out of the running totals and deletes a field that reaches 0 (a rate total, once
# within float error of it), so the hash holds what is live, not every zone and version any hello
# ever named: the summary reads it whole once a second.
COUNT_OUT = """
local n = tonumber(ARGV[1])
for i = 2, n + 1 do
  if redis.call('HINCRBY', KEYS[1], ARGV[i], -1) <= 0 then redis.call('HDEL', KEYS[1], ARGV[i]) end
end
for i = n + 2, #ARGV, 2 do
  local rate = tonumber(ARGV[i + 1])
  if tonumber(redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], -rate)) <= math.abs(rate) * 1e-9 then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return n
"""


class Scripts:
    """The scripts registered once on a connection (huey's pattern): call them by name."""

    def __init__(self, redis: Redis) -> None:
        self.assign: Script = redis.register_script(ASSIGN)
        self.accept: Script = redis.register_script(ACCEPT)
        self.requeue: Script = redis.register_script(REQUEUE)
        self.steal: Script = redis.register_script(STEAL)
        self.peek: Script = redis.register_script(PEEK)
        self.end: Script = redis.register_script(END)
        self.redo: Script = redis.register_script(REDO)
        self.take: Script = redis.register_script(TAKE)
        self.last_running: Script = redis.register_script(LAST_RUNNING)
        self.count_out: Script = redis.register_script(COUNT_OUT)


@functools.lru_cache(maxsize=1024)
def job_script_keys(job_id: str) -> tuple[str, ...]:
    """The keys every job script is given, in its KEYS order (named once per job: asked per result)."""
    return (
        keys.job(job_id),
        keys.chunks(job_id),
        keys.pending(job_id),
        keys.wanted(job_id),
        keys.job_workers(job_id),
        keys.blobs(job_id),
        keys.trace(job_id),
        keys.data(job_id),
        keys.DEADLINES,
        keys.ACTIVE,
        keys.QUARANTINE,
        keys.LEDGER,
        keys.running(job_id),
    )
