-- The prelude of every gate script (asyncsdk/_redis/__init__.py describes the keys).
--
-- KEYS: window, slots, leases, queue, beats, seq, conf, streak of one account.
-- ARGV[1..9]: channel, limit, window, margin, concurrent, generation timeout, lease ttl, key
-- retention (times in ms), batch_every; a script's own arguments follow from ARGV[10].
-- Every script answers finish({status = ..., ...}): a JSON object with its own fields and the
-- account's snapshot (in_window, in_progress, queued, head, holders). When it changed the head
-- of the queue, or freed something while a slot is free, it publishes the head's name on the
-- account's channel: only the head can be admitted, so only its process needs to look again.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local WINDOW, SLOTS, LEASES, QUEUE, BEATS, SEQ, CONF, STREAK =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local channel = ARGV[1]
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local margin = tonumber(ARGV[4])
local concurrent = tonumber(ARGV[5])
local gen_timeout = tonumber(ARGV[6])
local lease_ttl = tonumber(ARGV[7])
local retention = tonumber(ARGV[8])
local batch_every = tonumber(ARGV[9])
-- Queue scores: interactive waiters have their ticket, batch ones ticket + 2^40.
local BATCH = 1099511627776
local BATCH_TEXT = '1099511627776'
local changed = false
local head_before = nil
local caller = nil  -- the waiter running this script (acquire): it needs no message

-- TIME is truncated to the millisecond: +1 keeps an entry live at least a full window.
local function settle_entry(member)
  local at = now + 1 + window + margin
  local score = redis.call('ZSCORE', WINDOW, member)
  if (not score) or score == 'inf' or tonumber(score) < at then
    redis.call('ZADD', WINDOW, at, member)
  end
end

local function read_lease(member)
  local raw = redis.call('HGET', LEASES, member)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function write_lease(member, lease, expires)
  redis.call('HSET', LEASES, member, cjson.encode(lease))
  redis.call('ZADD', SLOTS, expires, member)
end

local function drop_lease(member)
  if redis.call('ZREM', SLOTS, member) == 1 then changed = true end
  redis.call('HDEL', LEASES, member)
end

local function holder_of(gid)
  local all = redis.call('HGETALL', LEASES)
  for i = 1, #all, 2 do
    if cjson.decode(all[i + 1]).g == gid then return all[i] end
  end
  return nil
end

-- The waiter admitted next: the oldest interactive one, unless batch_every interactive ones
-- were admitted in a row while a batch one waits (then the oldest batch one).
local function head_of_queue()
  local interactive = redis.call('ZRANGEBYSCORE', QUEUE, '-inf', '(' .. BATCH_TEXT, 'LIMIT', 0, 1)[1]
  local batch = redis.call('ZRANGEBYSCORE', QUEUE, BATCH_TEXT, '+inf', 'LIMIT', 0, 1)[1]
  if interactive and not (batch and (tonumber(redis.call('GET', STREAK)) or 0) >= batch_every) then
    return interactive
  end
  return batch
end

local function prune()
  local expired = redis.call('ZRANGEBYSCORE', SLOTS, '-inf', now)
  if #expired > 0 then
    for _, member in ipairs(expired) do
      redis.call('HDEL', LEASES, member)
    end
    redis.call('ZREMRANGEBYSCORE', SLOTS, '-inf', now)
    changed = true
  end
  -- An entry in flight whose lease is gone: its holder died, what it sent has arrived by now.
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', WINDOW, '+inf', '+inf')) do
    if not redis.call('ZSCORE', SLOTS, member) then settle_entry(member) end
  end
  redis.call('ZREMRANGEBYSCORE', WINDOW, '-inf', now)
  local dead = redis.call('ZRANGEBYSCORE', BEATS, '-inf', now)
  if #dead > 0 then
    redis.call('ZREM', QUEUE, unpack(dead))
    redis.call('ZREMRANGEBYSCORE', BEATS, '-inf', now)
    changed = true
  end
  head_before = head_of_queue()
end

local function resync(remaining, resets_in)
  remaining = tonumber(remaining)
  if not remaining then return end
  resets_in = tonumber(resets_in)
  local missing = (limit - math.max(remaining, 0)) - redis.call('ZCARD', WINDOW)
  for i = 1, missing do
    local horizon = window
    if i == 1 and resets_in then horizon = math.min(math.max(resets_in, 0), window) end
    redis.call('ZADD', WINDOW, now + horizon + margin, 'phantom.' .. redis.call('INCR', SEQ))
  end
end

local function finish(reply)
  for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], retention) end
  local head = head_of_queue()
  -- (while every slot is taken, the head can only wait: news of the window cannot help it)
  if head and head ~= caller and (head ~= head_before
      or (changed and redis.call('ZCARD', SLOTS) < concurrent)) then
    redis.call('PUBLISH', channel, head)
  end
  reply.head = head or ''
  local holders = {}
  local all = redis.call('HGETALL', LEASES)
  for i = 1, #all, 2 do
    local lease = cjson.decode(all[i + 1])
    holders[#holders + 1] = {key = all[i], generation_id = lease.g, watched = lease.w,
                             orphan = lease.o or 0, tag = lease.t or '', sent_ms = lease.s or ''}
  end
  reply.in_window = redis.call('ZCARD', WINDOW)
  reply.in_progress = redis.call('ZCARD', SLOTS)
  reply.queued = redis.call('ZCARD', QUEUE)
  reply.holders = holders
  return cjson.encode(reply)
end
