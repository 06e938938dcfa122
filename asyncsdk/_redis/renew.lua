-- ARGV[10..] pairs of (lease, watched 0/1): extend them. -> renewed (lost: the ones gone)
prune()
local lost = {}
for i = 10, #ARGV, 2 do
  local member = ARGV[i]
  local lease = read_lease(member)
  if lease and lease.f == 0 then
    lease.w = tonumber(ARGV[i + 1])
    local expires = now + lease_ttl
    if lease.c >= 0 then expires = math.min(expires, lease.c) end
    write_lease(member, lease, expires)
  else
    lost[#lost + 1] = member
  end
end
return finish({status = 'renewed', lost = lost})
