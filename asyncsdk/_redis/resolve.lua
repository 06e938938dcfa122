-- ARGV[10] an orphaned lease, [11] the generation the probe found for it, or '' (nothing:
-- free it). A generation already held elsewhere frees it too.
prune()
local member, gid = ARGV[10], ARGV[11]
local lease = read_lease(member)
if lease and lease.o == 1 then
  local other = gid ~= '' and holder_of(gid)
  if gid == '' or (other and other ~= member) then
    drop_lease(member)
  else
    lease.g = gid
    lease.o = 0
    lease.t = nil
    redis.call('HSET', LEASES, member, cjson.encode(lease))
    changed = true
  end
end
return finish({status = 'resolved'})
