-- Evicts applied transactions whose commit LSN is at or below the replay
-- LSN of local: removes their overlay entries and marks them replicated,
-- kept for `retention` seconds so their state stays readable. Idempotent,
-- so any process may run it.
--
-- ARGV: prefix, replay LSN (16 hex digits), limit, now_ms, retention_s.

local lsn, limit, now, retention = ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
-- Members are "{lsn}:{txid}"; '~' sorts after every hex digit and '-'.
local members = redis.call('ZRANGEBYLEX', prefix .. 'applied', '-', '[' .. lsn .. ':~', 'LIMIT', 0, limit)
local ids = {}
for _, member in ipairs(members) do
  local id = string.sub(member, 18)
  local txkey = prefix .. 'tx:' .. id
  remove_entries(redis.call('HGET', txkey, 'entries'), now)
  release_guards(txkey)
  if redis.call('EXISTS', txkey) == 1 then
    redis.call('HSET', txkey, 'state', 'replicated', 'replicated_ms', now)
    redis.call('EXPIRE', txkey, retention)
  end
  redis.call('ZREM', prefix .. 'applied', member)
  ids[#ids + 1] = id
end
return ids
