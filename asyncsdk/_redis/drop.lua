-- ARGV[10] permit: free its slot (compare-and-delete on its own token); ARGV[11] '1' when
-- the submission was never sent, which also gives back its window entry.
prune()
if ARGV[11] == '1' and redis.call('ZREM', WINDOW, ARGV[10]) == 1 then changed = true end
drop_lease(ARGV[10])
return finish({status = 'dropped'})
