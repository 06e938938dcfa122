-- ARGV[10] permit, [11] 'none' (nothing created: free the slot) or 'held', [12] generation
-- id or '' (unknown owner), [13] '1' to settle the window entry ('2': only if still in
-- flight), [14..15] resync, [16] '1' when orphaned, [17] tag, [18] sent at (Unix ms).
-- -> free | held | lost (the lease had expired: recorded as a fixed hold)
prune()
local member, mode, gid = ARGV[10], ARGV[11], ARGV[12]
local orphan = tonumber(ARGV[16]) or 0
local tag, sent = ARGV[17] or '', tonumber(ARGV[18])
if ARGV[13] == '1' or (ARGV[13] == '2' and redis.call('ZSCORE', WINDOW, member) == 'inf') then
  settle_entry(member)
  changed = true
end
if ARGV[13] ~= '0' then resync(ARGV[14], ARGV[15]) end
if mode == 'none' then
  drop_lease(member)
  return finish({status = 'free'})
end
local cap = now + gen_timeout + margin
local lease = read_lease(member)
if lease then
  local other = gid ~= '' and holder_of(gid)
  if other and other ~= member then
    drop_lease(member)  -- that generation holds a slot already (e.g. as a foreign one)
    return finish({status = 'held'})
  end
  lease.g = gid
  lease.c = cap
  lease.a = 0
  lease.o = orphan
  lease.t = tag
  lease.s = sent
  changed = true
  local expires = cap
  if lease.f == 0 then expires = math.min(now + lease_ttl, cap) end
  write_lease(member, lease, expires)
  return finish({status = 'held'})
end
if gid == '' or not holder_of(gid) then
  write_lease(member, {g = gid, c = cap, a = 0, w = 0, f = 1, o = orphan, t = tag, s = sent}, cap)
end
return finish({status = 'lost'})
