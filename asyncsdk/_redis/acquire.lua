-- ARGV[10] waiter, [11] its queue score or '' (new), [12] heartbeat ms, [13] limits,
-- [14..15] resync (remaining, resets in ms), [16] lane: 'interactive' or 'batch'.
-- -> ok | slot (the head, waiting for a lease: wait_ms to the first expiry) | window (the
--    head, a slot is free: wait_ms until the window has room, -1 unknown) | queued (wait_ms
--    until the head's heartbeat runs out) | conflict (limits: the other processes' limits);
--    ticket: the waiter's queue score, to pass back as ARGV[11].
prune()
local member = ARGV[10]
caller = member
if redis.call('ZSCORE', WINDOW, member) == 'inf' and redis.call('ZSCORE', SLOTS, member) then
  return finish({status = 'ok', ticket = ARGV[11]})  -- a resent call: already admitted
end
local conf = redis.call('GET', CONF)
if conf and conf ~= ARGV[13] and redis.call('ZCARD', WINDOW) + redis.call('ZCARD', SLOTS)
    + redis.call('ZCARD', QUEUE) > 0 then
  return finish({status = 'conflict', limits = conf})
end
redis.call('SET', CONF, ARGV[13])
resync(ARGV[14], ARGV[15])
local ticket = redis.call('ZSCORE', QUEUE, member)
if not ticket then
  -- new, or dropped as dead while it was only slow: back in at its old place
  ticket = tonumber(ARGV[11])
  if not ticket then
    ticket = redis.call('INCR', SEQ)
    if ARGV[16] == 'batch' then ticket = ticket + BATCH end
  end
  redis.call('ZADD', QUEUE, ticket, member)
end
ticket = tonumber(ticket)
local text = string.format('%d', ticket)
redis.call('ZADD', BEATS, now + tonumber(ARGV[12]), member)
local head = head_of_queue()
if head ~= member then
  local beat = redis.call('ZSCORE', BEATS, head)
  if not beat then return finish({status = 'queued', ticket = text, wait_ms = -1}) end
  return finish({status = 'queued', ticket = text, wait_ms = tonumber(beat) - now})
end
local taken = redis.call('ZCARD', SLOTS)
local used = redis.call('ZCARD', WINDOW)
if taken < concurrent and used < limit then
  redis.call('ZREM', QUEUE, member)
  redis.call('ZREM', BEATS, member)
  if ticket >= BATCH then
    redis.call('SET', STREAK, 0)
  else
    redis.call('INCR', STREAK)
  end
  redis.call('ZADD', WINDOW, '+inf', member)
  write_lease(member, {g = '', c = now + gen_timeout + margin, a = 1, w = 0, f = 0, o = 0},
              now + lease_ttl)
  return finish({status = 'ok', ticket = text})  -- (the next head is told: the head changed)
end
if taken >= concurrent then
  local first = redis.call('ZRANGE', SLOTS, 0, 0, 'WITHSCORES')
  return finish({status = 'slot', ticket = text, wait_ms = tonumber(first[2]) - now})
end
-- the window must drop to limit - 1 entries: wait for the (used - limit + 1)-th to expire
local nth = redis.call('ZRANGE', WINDOW, used - limit, used - limit, 'WITHSCORES')
if nth[2] == 'inf' then return finish({status = 'window', ticket = text, wait_ms = -1}) end
return finish({status = 'window', ticket = text, wait_ms = tonumber(nth[2]) - now})
