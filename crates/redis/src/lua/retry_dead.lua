-- Puts a dead-lettered transaction back in the queue at its own sequence
-- number, which is ahead of every transaction acknowledged after it, and
-- releases every blocked transaction for the drainer to check again.
--
-- ARGV: prefix, txid, now_ms.

local id, now = ARGV[2], ARGV[3]
local seq = redis.call('ZSCORE', prefix .. 'dead', id)
if not seq then return {'not_dead'} end
local txkey = prefix .. 'tx:' .. id
redis.call('ZREM', prefix .. 'dead', id)
release_keys(id, redis.call('HGET', txkey, 'keys'))
redis.call('ZADD', prefix .. 'queue', seq, id)
redis.call('HSET', txkey, 'state', 'queued', 'requeued_ms', now)
local released = unblock_all(now)
return {'ok', released}
