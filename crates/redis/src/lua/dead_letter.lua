-- Moves a transaction main rejected to the dead letters with main's error,
-- and holds the records it touches so later transactions on them wait.
-- Only the lease holder may do so.
--
-- ARGV: prefix, lease, txid, error, sqlstate, now_ms.

local lease, id, err, sqlstate, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if not lease_held(lease) then return {'lease_lost'} end
local txkey = prefix .. 'tx:' .. id
local seq = redis.call('ZSCORE', prefix .. 'queue', id)
if not seq then return {'not_queued'} end
redis.call('ZREM', prefix .. 'queue', id)
redis.call('ZADD', prefix .. 'dead', seq, id)
redis.call('HSET', txkey, 'state', 'dead', 'error', err, 'sqlstate', sqlstate, 'failed_ms', now)
redis.call('HINCRBY', txkey, 'attempts', 1)
hold_keys(id, redis.call('HGET', txkey, 'keys'))
return {'ok'}
