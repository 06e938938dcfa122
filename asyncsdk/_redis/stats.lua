-- The account's snapshot, after pruning.
prune()
return finish({status = 'stats'})
