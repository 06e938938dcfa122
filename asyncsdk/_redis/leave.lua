-- ARGV[10] waiter: leave the queue; undo an admission whose answer never reached the caller.
prune()
local member = ARGV[10]
if redis.call('ZREM', QUEUE, member) == 1 then changed = true end
redis.call('ZREM', BEATS, member)
local lease = read_lease(member)
if lease and lease.a == 1 and redis.call('ZSCORE', WINDOW, member) == 'inf' then
  redis.call('ZREM', WINDOW, member)
  drop_lease(member)
end
return finish({status = 'left'})
