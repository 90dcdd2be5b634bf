-- Acknowledges one transaction: checks its preconditions against pending
-- state, assigns the next sequence number, and writes every overlay entry,
-- the transaction record and the queue entry. All or nothing: a failed
-- check or a full buffer writes nothing.
--
-- The checks of the request read the guards it expects before reading the
-- merged view. A guard that changed since then means a concurrent write
-- may have made the checks wrong, so the script returns "stale" and the
-- request is checked again.
--
-- ARGV: prefix, txid, now_ms, max_pending (0: no limit), keys_json,
-- guards_json (added on success), expected guard count, then per expected
-- guard (table, field, count), precondition count, then per precondition
-- (table, key, rule, in_local), then per entry (table, index, kind, key,
-- value).

local txid, now = ARGV[2], ARGV[3]
local max_pending = tonumber(ARGV[4])
local keys_json = ARGV[5]
local guards_json = ARGV[6]
local nexpect = tonumber(ARGV[7])
local pos = 8
-- This check comes first, so a request sent again after a lost reply
-- learns that its first attempt was stored, whatever that attempt changed.
if redis.call('EXISTS', prefix .. 'tx:' .. txid) == 1 then return {'duplicate', 0} end
for i = 1, nexpect do
  local tbl, field, want = ARGV[pos], ARGV[pos + 1], tonumber(ARGV[pos + 2])
  pos = pos + 3
  local have = tonumber(redis.call('HGET', prefix .. 'guard:' .. tbl, field) or '0')
  if have ~= want then return {'stale', i} end
end
local npre = tonumber(ARGV[pos])
pos = pos + 1

if max_pending > 0 then
  local pending = redis.call('ZCARD', prefix .. 'queue') + redis.call('ZCARD', prefix .. 'blocked')
  if pending >= max_pending then return {'full', pending} end
end

-- "exists": the record exists in the merged view (in local or created in
-- the buffer) and no delete is pending; a record whose delete reached local
-- after the request read local counts as missing. "absent": nothing local
-- or pending has that key.
for i = 1, npre do
  local tbl, key, rule, in_local = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2], ARGV[pos + 3]
  pos = pos + 4
  local c, d, n = rec_get(tbl, key)
  if rule == 'exists' then
    if d == 1 then return {'precondition', i, 'deleted'} end
    if in_local ~= '1' and c ~= 1 then return {'precondition', i, 'missing'} end
    if in_local == '1' and c ~= 1 and redis.call('ZSCORE', prefix .. 'gone:' .. tbl, key) then
      return {'precondition', i, 'missing'}
    end
  elseif rule == 'absent' then
    if d == 1 then return {'precondition', i, 'pending_delete'} end
    if n > 0 or in_local == '1' then return {'precondition', i, 'exists'} end
  end
end

if redis.call('EXISTS', prefix .. 'gen') == 0 then
  redis.call('SET', prefix .. 'gen', now .. '-' .. txid)
end
local seq = redis.call('INCR', prefix .. 'seq')
local entries = {}
local versions = {}
while pos <= #ARGV do
  local tbl, idx, kind, key, value = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2], ARGV[pos + 3], ARGV[pos + 4]
  pos = pos + 5
  local field = string.format('%016d:%06d:%s:%s', seq, tonumber(idx), kind, key)
  redis.call('HSET', prefix .. 'overlay:' .. tbl, field, value)
  local c, d, n = rec_get(tbl, key)
  if kind == 'c' then
    c = 1
    redis.call('ZREM', prefix .. 'gone:' .. tbl, key)
  end
  if kind == 'd' then d = 1 end
  rec_set(tbl, key, c, d, n + 1)
  if not versions[tbl] then
    versions[tbl] = bump_version(tbl)
    redis.call('SADD', prefix .. 'tables', tbl)
  end
  log_change(tbl, versions[tbl], '+', field)
  entries[#entries + 1] = {tbl, field}
end
for tbl, _ in pairs(versions) do trim_log(tbl) end

redis.call('HSET', prefix .. 'tx:' .. txid,
  'seq', seq, 'state', 'queued', 'created_ms', now,
  'entries', cjson.encode(entries), 'keys', keys_json, 'attempts', 0)
if guards_json ~= '' then
  add_guards(guards_json, 1)
  redis.call('HSET', prefix .. 'tx:' .. txid, 'guards', guards_json)
end
redis.call('ZADD', prefix .. 'queue', seq, txid)
return {'ok', seq}
