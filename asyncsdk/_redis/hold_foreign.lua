-- ARGV[10] generation id, [11] a fresh token: hold a slot for it unless something does.
prune()
if not holder_of(ARGV[10]) then
  local cap = now + gen_timeout + margin
  write_lease(ARGV[11], {g = ARGV[10], c = cap, a = 0, w = 0, f = 1, o = 0}, cap)
end
return finish({status = 'held'})
