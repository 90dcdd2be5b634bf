-- Records that main committed these transactions at commit_lsn and moves
-- them from the queue to the set waiting for replication. Only the lease
-- holder may do so.
--
-- ARGV: prefix, lease, commit LSN (16 hex digits), now_ms, txid...

local lease, lsn, now = ARGV[2], ARGV[3], ARGV[4]
if not lease_held(lease) then return {'lease_lost'} end
for i = 5, #ARGV do
  local id = ARGV[i]
  local txkey = prefix .. 'tx:' .. id
  if redis.call('EXISTS', txkey) == 1 then
    redis.call('ZREM', prefix .. 'queue', id)
    redis.call('HSET', txkey, 'state', 'applied', 'commit_lsn', lsn, 'applied_ms', now)
    redis.call('ZADD', prefix .. 'applied', 0, lsn .. ':' .. id)
  end
end
return {'ok'}
