-- Discards a dead-lettered transaction: removes its overlay entries so the
-- merged view no longer shows it, releases its records, and releases every
-- blocked transaction for the drainer to check again.
--
-- ARGV: prefix, txid, now_ms, retention_s.

local id, now, retention = ARGV[2], ARGV[3], tonumber(ARGV[4])
if not redis.call('ZSCORE', prefix .. 'dead', id) then return {'not_dead'} end
local txkey = prefix .. 'tx:' .. id
redis.call('ZREM', prefix .. 'dead', id)
remove_entries(redis.call('HGET', txkey, 'entries'))
release_guards(txkey)
release_keys(id, redis.call('HGET', txkey, 'keys'))
redis.call('HSET', txkey, 'state', 'discarded', 'discarded_ms', now)
redis.call('EXPIRE', txkey, retention)
local released = unblock_all(now)
return {'ok', released}
