-- ARGV[10..] generation ids seen ending: free every hold of any of them, whoever took it.
-- -> released (freed: how many holds)
prune()
local ended = {}
for i = 10, #ARGV do ended[ARGV[i]] = true end
local freed = 0
local all = redis.call('HGETALL', LEASES)
for i = 1, #all, 2 do
  local gid = cjson.decode(all[i + 1]).g
  if gid ~= '' and ended[gid] then
    drop_lease(all[i])
    freed = freed + 1
  end
end
return finish({status = 'released', freed = freed})
