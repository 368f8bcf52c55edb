"""The Lua scripts of :class:`serverless.store.redis.RedisStore`: one script per store
operation, each run atomically by Redis, all sharing the prelude below.

Key layout, for endpoint ``E`` under ``prefix``: every key starts with ``B = prefix + ":{" + E
+ "}:"`` (passed as KEYS[1]; a prefix that already ends with ``:`` gets no second one; the
braces keep endpoint ids apart). The scripts build the other key names from ``B``, so the store
needs one Redis server, not a cluster. The channel is ``prefix + ":events"``.

==============  =======  ===================================================================
key             type     holds
==============  =======  ===================================================================
``B j:<id>``    hash     one job: ``spec`` (msgpack of the fields that never change), and the
                         state fields ``st`` status, ``w`` worker id, ``sa``/``fa`` started /
                         finished at, ``ex`` expires at, ``o`` output, ``e`` error, ``at``
                         attempts, ``rt`` retries, ``ro`` take order (while IN_PROGRESS),
                         ``ca`` the token of the last chunk append (``APPEND_CHUNKS``),
                         ``tt`` the token of the take that handed it out (``TAKE``),
                         plus ``to``/``rn``/``tl`` (execution timeout, retention, ttl in ms)
                         that the scripts compute with
``B c:<id>``    list     the job's stream chunks not yet read by ``/stream``
``B q``         zset     the queue: IN_QUEUE ids by sequence (tail = +seq, head = -seq)
``B seq``       string   the queue sequence counter
``B ro``        string   the take order counter (``ro`` of each taken job)
``B r``         zset     IN_PROGRESS ids by run deadline (started_at + executionTimeout)
``B x``         zset     every job id by ``expires_at``
``B w``         zset     worker ids by last contact
``B wh``        hash     worker id -> last ping report: ``u`` unhealthy, ``r`` reported jobs,
                         ``""`` idle
``B wp``        hash     worker id -> msgpack ``[ping_at, reports_jobs, [job ids]]``: time of
                         the last ping, whether any ping ever listed a job id (0/1), and the
                         ids the last ping listed (for ``requeue_unreported``)
``B wc``        hash     worker id -> ``cut_at``, the time a held poll of the worker was closed by
                         it (``abandon_poll``), until its next request other than a ping;
                         ``gone`` once ``requeue_unreported`` found it gone
``B wj:<wid>``  set      the IN_PROGRESS job ids a worker holds
``B wt:<wid>``  string   the token of the worker's last take (``TAKE``), for ten minutes
``B s:<wid>``   list     job ids the worker must stop (job-stop), expires after ``stop_ttl``
``B n``         hash     cumulative counters ``completed``, ``failed``, ``retried``
``B l:<op>``    zset     the rate window of operation ``op`` (``RATE``): one unique member per
                         request admitted, scored by its time; expires one window after the last
==============  =======  ===================================================================

Job and chunk keys also carry a native Redis TTL of ``expires_at + grace``: a safety net for
when no replica sweeps; sweeps delete them on time (and send the stop signal) before that.

Wake-ups: scripts ``PUBLISH`` msgpack ``[kind, endpoint, id]`` on the store's channel: ``q``
(queue went from empty to non-empty; id ``""``), ``j`` (job changed; for stream chunks only
when the unread buffer was empty), ``s`` (stop signal for worker ``id``). A waiter that checked
and found nothing is always followed by such an event, so these suffice.

Common ARGV: [1] channel, [2] endpoint, [3] now (float seconds), [4] grace (ms), [5] stop
signal ttl (ms); each script's own arguments start at ARGV[6]. Scripts that return a job
return its ``FIELDS`` in order (see ``redis.py``).
"""

from __future__ import annotations

#: the job hash fields a script returns for a job, in this order (decoded by redis.py)
FIELDS = ("spec", "st", "w", "sa", "fa", "ex", "o", "e", "at", "rt")

#: the names of the per-operation scripts below (each is run as PRELUDE + script)
SCRIPTS = ("SUBMIT", "SET_TTL", "READ_STREAM", "CANCEL", "RETRY", "PURGE", "HEALTH", "TAKE",
           "APPEND_CHUNKS", "PROGRESS", "FINISH", "ABANDON_POLL", "TAKE_STOPS", "TOUCH", "SWEEP",
           "REQUEUE_UNREPORTED", "RATE")

PRELUDE = r"""
local B, CH, EP = KEYS[1], ARGV[1], ARGV[2]
local NOWS = ARGV[3]
local NOW = tonumber(NOWS)
local GRACE = tonumber(ARGV[4])
local STOP_TTL = tonumber(ARGV[5])
local Q, SEQ, R, X, W, WH, WP, N = B..'q', B..'seq', B..'r', B..'x', B..'w', B..'wh', B..'wp', B..'n'
local WC = B..'wc'
local FIELDS = {@FIELDS@}

local function jk(id) return B..'j:'..id end
local function ck(id) return B..'c:'..id end
local function wjk(wid) return B..'wj:'..wid end
local function wtk(wid) return B..'wt:'..wid end
local function sk(wid) return B..'s:'..wid end
local function num(x) return string.format('%.17g', x) end

local function publish(kind, id)
  redis.call('PUBLISH', CH, cmsgpack.pack({kind, EP, id}))
end

local function record(id)
  return redis.call('HMGET', jk(id), unpack(FIELDS))
end

-- {st, ex, w, rn, to, tl} of a job that exists and has not expired, else nil
local function live(id)
  local v = redis.call('HMGET', jk(id), 'st', 'ex', 'w', 'rn', 'to', 'tl')
  if not v[1] or tonumber(v[2]) <= NOW then return nil end
  return v
end

-- live() of an IN_PROGRESS job held by worker wid, else nil
local function owned(id, wid)
  local v = live(id)
  if not v or v[1] ~= 'IN_PROGRESS' or v[3] ~= wid then return nil end
  return v
end

-- contact from a worker; every request but a ping also shows its main process is there
local function touch(wid, ping)
  redis.call('ZADD', W, NOWS, wid)
  if not ping then redis.call('HDEL', WC, wid) end
end

local function set_expiry(id, ex)
  redis.call('HSET', jk(id), 'ex', num(ex))
  redis.call('ZADD', X, num(ex), id)
  local ms = math.max(1, math.floor((ex - NOW) * 1000) + GRACE)
  redis.call('PEXPIRE', jk(id), ms)
  redis.call('PEXPIRE', ck(id), ms)
end

local function enqueue(id, head)
  local was_empty = redis.call('ZCARD', Q) == 0
  local seq = redis.call('INCR', SEQ)
  if head then seq = -seq end
  redis.call('ZADD', Q, seq, id)
  if was_empty then publish('q', '') end
end

local function stop(wid, id)
  if not wid then return end
  redis.call('RPUSH', sk(wid), id)
  redis.call('PEXPIRE', sk(wid), STOP_TTL)
  publish('s', wid)
end

-- leave the running structures (R, the worker's set) if the job is IN_PROGRESS
local function unrun(id, v)
  if v[1] == 'IN_PROGRESS' then
    redis.call('ZREM', R, id)
    if v[3] then redis.call('SREM', wjk(v[3]), id) end
  end
end

local function delete(id)
  redis.call('DEL', jk(id), ck(id))
  redis.call('ZREM', X, id)
  publish('j', id)
end

-- a queued or running job becomes terminal; the retention clock starts
local function terminate(id, v, status)
  unrun(id, v)
  if v[1] == 'IN_QUEUE' then redis.call('ZREM', Q, id) end
  redis.call('HSET', jk(id), 'st', status, 'fa', NOWS)
  if status == 'COMPLETED' then
    redis.call('HINCRBY', N, 'completed', 1)
  elseif status == 'FAILED' or status == 'TIMED_OUT' then
    redis.call('HINCRBY', N, 'failed', 1)
  end
  set_expiry(id, math.min(tonumber(v[2]), NOW + tonumber(v[4]) / 1000))
  publish('j', id)
end

-- back to IN_QUEUE (at the head or the tail), run state and unread chunks cleared
local function requeue(id, v, head)
  unrun(id, v)
  redis.call('HSET', jk(id), 'st', 'IN_QUEUE')
  redis.call('HDEL', jk(id), 'w', 'sa', 'fa', 'o', 'e', 'ro', 'tt')
  redis.call('DEL', ck(id))
  enqueue(id, head)
  publish('j', id)
end

-- the job's worker lost it (v: st, ex, w, rn, ...): attempts += 1, then back to the head of the
-- queue, or FAILED "worker lost" once attempts exceed max_attempts; true when it became terminal
local function lost(id, v, max_attempts)
  if redis.call('HINCRBY', jk(id), 'at', 1) <= max_attempts then
    requeue(id, v, true)
    return false
  end
  redis.call('HSET', jk(id), 'e', 'worker lost')
  terminate(id, v, 'FAILED')
  return true
end

-- lost() for each {ro, id, v} of ``due`` in take order (as MemoryStore walks its running jobs,
-- so simultaneous head re-queues end in the same order); appends terminal records to finished
local function lose_all(due, max_attempts, finished)
  table.sort(due, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end)
  for _, d in ipairs(due) do
    if lost(d[2], d[3], max_attempts) then finished[#finished + 1] = record(d[2]) end
  end
end

-- set (flag '1') or remove a hash field
local function put(id, field, flag, value)
  if flag == '1' then
    redis.call('HSET', jk(id), field, value)
  else
    redis.call('HDEL', jk(id), field)
  end
end
""".replace("@FIELDS@", ", ".join(f"'{name}'" for name in FIELDS))

# ARGV[6] max_queue ('' = none), [7] id, [8] spec, [9] expires_at, [10] to, [11] rn, [12] tl,
# [13] attempts, [14] retries
SUBMIT = r"""
local id = ARGV[7]
if ARGV[6] ~= '' and redis.call('ZCARD', Q) >= tonumber(ARGV[6]) then return 0 end
redis.call('HSET', jk(id), 'spec', ARGV[8], 'st', 'IN_QUEUE', 'to', ARGV[10], 'rn', ARGV[11],
           'tl', ARGV[12], 'at', ARGV[13], 'rt', ARGV[14])
set_expiry(id, tonumber(ARGV[9]))
enqueue(id, false)
return 1
"""

# ARGV[6] ttl ms, [7] id
SET_TTL = r"""
local id = ARGV[7]
if not live(id) then return nil end
set_expiry(id, NOW + tonumber(ARGV[6]) / 1000)
return record(id)
"""

# ARGV[6] id -> {record, chunks}
READ_STREAM = r"""
local id = ARGV[6]
if not live(id) then return nil end
local chunks = redis.call('LRANGE', ck(id), 0, -1)
if #chunks > 0 then redis.call('DEL', ck(id)) end
return {record(id), chunks}
"""

# ARGV[6] id -> {changed, record}
CANCEL = r"""
local id = ARGV[6]
local v = live(id)
if not v then return nil end
if v[1] ~= 'IN_QUEUE' and v[1] ~= 'IN_PROGRESS' then return {0, record(id)} end
terminate(id, v, 'CANCELLED')
if v[1] == 'IN_PROGRESS' then stop(v[3], id) end
return {1, record(id)}
"""

# ARGV[6] id -> {changed, record}
RETRY = r"""
local id = ARGV[6]
local v = live(id)
if not v then return nil end
if v[1] ~= 'FAILED' and v[1] ~= 'TIMED_OUT' then return {0, record(id)} end
redis.call('HINCRBY', jk(id), 'rt', 1)
redis.call('HSET', jk(id), 'at', 0)
redis.call('HINCRBY', N, 'retried', 1)
set_expiry(id, NOW + tonumber(v[6]) / 1000)
requeue(id, v, false)
return {1, record(id)}
"""

PURGE = r"""
local ids = redis.call('ZRANGE', Q, 0, -1)
for _, id in ipairs(ids) do delete(id) end
redis.call('DEL', Q)
return #ids
"""

# ARGV[6] worker_timeout (s) -> {completed, failed, retried, inQueue, inProgress, idle, running,
# unhealthy}
HEALTH = r"""
local c = redis.call('HMGET', N, 'completed', 'failed', 'retried')
local idle, running, unhealthy = 0, 0, 0
local alive = redis.call('ZRANGEBYSCORE', W, '(' .. num(NOW - tonumber(ARGV[6])), '+inf')
for _, wid in ipairs(alive) do
  local report = redis.call('HGET', WH, wid)
  if redis.call('HGET', WC, wid) == 'gone' then
    -- found gone by REQUEUE_UNREPORTED: only its orphaned heartbeat pings
  elseif report == 'u' then
    unhealthy = unhealthy + 1
  elseif report == 'r' or redis.call('SCARD', wjk(wid)) > 0 then
    running = running + 1
  else
    idle = idle + 1
  end
end
return {tonumber(c[1]) or 0, tonumber(c[2]) or 0, tonumber(c[3]) or 0,
        redis.call('ZCARD', Q), redis.call('ZCARD', R), idle, running, unhealthy}
"""

# ARGV[6] worker id, [7] count, [8] the call's token -> list of records, in take order.
# A resent call (its reply was lost: see APPEND_CHUNKS) answers the jobs the first one took,
# marked with its token (``tt``), rather than taking more: those would run nowhere until
# ``requeue_unreported`` found them. One worker takes one batch at a time.
TAKE = r"""
local wid, want, token = ARGV[6], tonumber(ARGV[7]), ARGV[8]
touch(wid)
local out = {}
if redis.call('GET', wtk(wid)) == token then
  local taken = {}
  for _, id in ipairs(redis.call('SMEMBERS', wjk(wid))) do
    local v = redis.call('HMGET', jk(id), 'tt', 'ro')
    if v[1] == token then taken[#taken + 1] = {tonumber(v[2]), id} end
  end
  table.sort(taken, function(a, b) return a[1] < b[1] end)
  for _, t in ipairs(taken) do out[#out + 1] = record(t[2]) end
  return out
end
redis.call('SET', wtk(wid), token, 'PX', 600000)
while #out < want do
  local popped = redis.call('ZPOPMIN', Q, want - #out)
  if #popped == 0 then break end
  for i = 1, #popped, 2 do
    local id = popped[i]
    local v = redis.call('HMGET', jk(id), 'st', 'ex', 'to')
    if v[1] then
      if tonumber(v[2]) <= NOW then
        delete(id)
      elseif v[1] == 'IN_QUEUE' then
        redis.call('HSET', jk(id), 'st', 'IN_PROGRESS', 'w', wid, 'sa', NOWS, 'ro', redis.call('INCR', B..'ro'),
                   'tt', token)
        redis.call('ZADD', R, num(NOW + tonumber(v[3]) / 1000), id)
        redis.call('SADD', wjk(wid), id)
        publish('j', id)
        out[#out + 1] = record(id)
      end
    end
  end
end
return out
"""

# ARGV[6] id, [7] worker id, [8] the call's token, [9..] chunks -> 1 applied / 0 not.
# The client resends a call whose reply it lost; the token (kept as the job's ``ca``) makes
# the resent call a no-op rather than a second copy of its chunks. A worker posts one job's
# chunks one call after another, so the last call's token is all that needs remembering.
APPEND_CHUNKS = r"""
local id, wid, token = ARGV[6], ARGV[7], ARGV[8]
if not owned(id, wid) then stop(wid, id) return 0 end
touch(wid)
if redis.call('HGET', jk(id), 'ca') == token then return 1 end
redis.call('HSET', jk(id), 'ca', token)
local was = redis.call('LLEN', ck(id))
for i = 9, #ARGV do redis.call('RPUSH', ck(id), ARGV[i]) end
local ttl = redis.call('PTTL', jk(id))
if ttl > 0 then redis.call('PEXPIRE', ck(id), ttl) end
if was == 0 and #ARGV >= 9 then publish('j', id) end
return 1
"""

# ARGV[6] id, [7] worker id, [8] has output '1'/'0', [9] output -> 1 / 0
PROGRESS = r"""
local id, wid = ARGV[6], ARGV[7]
if not owned(id, wid) then return 0 end
touch(wid)
put(id, 'o', ARGV[8], ARGV[9])
publish('j', id)
return 1
"""

# ARGV[6] id, [7] worker id, [8] status, [9] has output, [10] output, [11] has error, [12] error
FINISH = r"""
local id, wid = ARGV[6], ARGV[7]
local v = owned(id, wid)
if not v then return nil end
touch(wid)
put(id, 'o', ARGV[9], ARGV[10])
put(id, 'e', ARGV[11], ARGV[12])
terminate(id, v, ARGV[8])
return record(id)
"""

# ARGV[6] worker id, [7..] job ids taken by the abandoned poll (back to the head, first first)
ABANDON_POLL = r"""
local wid = ARGV[6]
for i = #ARGV, 7, -1 do
  local v = owned(ARGV[i], wid)
  if v then requeue(ARGV[i], v, true) end
end
redis.call('HSET', WC, wid, NOWS)
return 1
"""

# ARGV[6] worker id -> job ids
TAKE_STOPS = r"""
local wid = ARGV[6]
touch(wid)
local ids = redis.call('LRANGE', sk(wid), 0, -1)
if #ids > 0 then redis.call('DEL', sk(wid)) end
return ids
"""

# ARGV[6] worker id, [7] report: '-' keep the last one (not a ping), else a ping: 'u'
# unhealthy, 'r' running jobs, '' idle; [8..] the job ids the ping listed
TOUCH = r"""
local wid = ARGV[6]
touch(wid, ARGV[7] ~= '-')
if ARGV[7] ~= '-' then
  redis.call('HSET', WH, wid, ARGV[7])
  local ids = {}
  for i = 8, #ARGV do ids[#ids + 1] = ARGV[i] end
  local reports = #ids > 0 and 1 or 0
  if reports == 0 then
    local prev = redis.call('HGET', WP, wid)
    if prev then reports = cmsgpack.unpack(prev)[2] end
  end
  redis.call('HSET', WP, wid, cmsgpack.pack({NOWS, reports, ids}))
end
return 1
"""

# ARGV[6] worker_timeout (s), [7] max_attempts, [8] max jobs per pass -> records of the jobs
# that became terminal
SWEEP = r"""
local timeout, max_attempts, limit = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local finished = {}

-- 1. execution timeouts
for _, id in ipairs(redis.call('ZRANGEBYSCORE', R, '-inf', NOWS, 'LIMIT', 0, limit)) do
  local v = live(id)
  local st = redis.call('HGET', jk(id), 'st')
  if not st or st ~= 'IN_PROGRESS' then
    redis.call('ZREM', R, id)
  elseif v then  -- an expired job is left to the expiry pass
    terminate(id, v, 'TIMED_OUT')
    stop(v[3], id)
    finished[#finished + 1] = record(id)
  end
end

-- 3. jobs of workers that stopped reporting
local due = {}
for _, wid in ipairs(redis.call('ZRANGEBYSCORE', W, '-inf', num(NOW - timeout))) do
  for _, id in ipairs(redis.call('SMEMBERS', wjk(wid))) do
    local v = redis.call('HMGET', jk(id), 'st', 'ex', 'w', 'rn', 'to', 'tl', 'ro')
    if not v[1] or v[1] ~= 'IN_PROGRESS' or v[3] ~= wid then
      redis.call('SREM', wjk(wid), id)
      if not v[1] then redis.call('ZREM', R, id) end
    elseif tonumber(v[2]) > NOW then
      due[#due + 1] = {tonumber(v[7]) or 0, id, v}
    end
  end
end
lose_all(due, max_attempts, finished)

-- 2. expiry: deleted (404), with a stop signal if it was running
for _, id in ipairs(redis.call('ZRANGEBYSCORE', X, '-inf', NOWS, 'LIMIT', 0, limit)) do
  local v = redis.call('HMGET', jk(id), 'st', 'ex', 'w')
  if not v[1] then
    redis.call('ZREM', X, id)
  elseif tonumber(v[2]) > NOW then
    redis.call('ZADD', X, v[2], id)
  else
    if v[1] == 'IN_PROGRESS' then
      unrun(id, v)
      stop(v[3], id)
    elseif v[1] == 'IN_QUEUE' then
      redis.call('ZREM', Q, id)
    end
    delete(id)
  end
end

-- 4. forget workers long gone that hold nothing
for _, wid in ipairs(redis.call('ZRANGEBYSCORE', W, '-inf', num(NOW - 10 * timeout), 'LIMIT', 0, limit)) do
  if redis.call('SCARD', wjk(wid)) == 0 then
    redis.call('ZREM', W, wid)
    redis.call('HDEL', WH, wid)
    redis.call('HDEL', WP, wid)
    redis.call('HDEL', WC, wid)
  end
end
return finished
"""

# ARGV[6] grace (s), [7] max_attempts -> records of the jobs that became terminal.
# Jobs held (per ``wj:<wid>``) by a worker that reports its jobs, whose last ping came at least
# ``grace`` after the job started without listing it, and every job of a worker whose poll was
# cut at least ``grace`` ago (``wc``; the worker is then marked ``gone``), are lost (as in
# SWEEP step 3); handled in take order (``ro``), as MemoryStore does.
REQUEUE_UNREPORTED = r"""
local grace, max_attempts = tonumber(ARGV[6]), tonumber(ARGV[7])
local due, seen = {}, {}
local cuts = redis.call('HGETALL', WC)
for i = 1, #cuts, 2 do
  local wid, cut_at = cuts[i], tonumber(cuts[i + 1])
  if cut_at and cut_at <= NOW - grace then
    redis.call('HSET', WC, wid, 'gone')
  end
  if cut_at == nil or cut_at <= NOW - grace then
    for _, id in ipairs(redis.call('SMEMBERS', wjk(wid))) do
      local v = redis.call('HMGET', jk(id), 'st', 'ex', 'w', 'rn', 'to', 'tl', 'sa', 'ro')
      if v[1] == 'IN_PROGRESS' and v[3] == wid and tonumber(v[2]) > NOW then
        due[#due + 1] = {tonumber(v[8]) or 0, id, v}
        seen[id] = true
      end
    end
  end
end
local pings = redis.call('HGETALL', WP)
for i = 1, #pings, 2 do
  local wid, ping = pings[i], cmsgpack.unpack(pings[i + 1])
  if ping[2] == 1 then
    local ping_at, listed = tonumber(ping[1]), {}
    for _, id in ipairs(ping[3]) do listed[id] = true end
    for _, id in ipairs(redis.call('SMEMBERS', wjk(wid))) do
      if not listed[id] and not seen[id] then
        local v = redis.call('HMGET', jk(id), 'st', 'ex', 'w', 'rn', 'to', 'tl', 'sa', 'ro')
        if v[1] == 'IN_PROGRESS' and v[3] == wid and v[7] and tonumber(v[2]) > NOW
            and ping_at >= tonumber(v[7]) + grace then
          due[#due + 1] = {tonumber(v[8]) or 0, id, v}
        end
      end
    end
  end
end
local finished = {}
lose_all(due, max_attempts, finished)
return finished
"""

# ARGV[6] operation, [7] per_window, [8] window (s), [9] a unique member -> "0" when the request
# is counted, else the seconds (a float, as a string) until the oldest one leaves the window.
# A sliding log rather than GCRA: it admits at most per_window requests in ANY window of that
# length, as RunPod's table says and as the per-replica fallback (serverless.limits) counts, so
# a replica losing Redis changes nothing but who counts. GCRA with a burst of per_window lets
# through up to twice that in one window; without a burst it spaces requests evenly, which
# RunPod does not. Its cost, one zset entry per request in the window (2,000 at most by
# RunPod's table), is small.
RATE = r"""
local key = B..'l:'..ARGV[6]
local per, window = tonumber(ARGV[7]), tonumber(ARGV[8])
redis.call('ZREMRANGEBYSCORE', key, '-inf', num(NOW - window))
if redis.call('ZCARD', key) >= per then
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return num(tonumber(oldest[2]) + window - NOW)
end
redis.call('ZADD', key, NOWS, ARGV[9])
redis.call('PEXPIRE', key, math.ceil(window * 1000))
return '0'
"""
