-- Picks the next transactions to apply, in acknowledgement order, for the
-- drainer that holds the lease, with their overlay entries. A transaction
-- that touches a record held by a dead-lettered or blocked transaction is
-- moved to the blocked set instead, so no record's changes reach main out of
-- order. Bumps the drain epoch of every table in the batch before returning:
-- a reader whose epoch changed while it read local knows local may show a
-- transaction its overlay snapshot did not contain, and reads again.
--
-- ARGV: prefix, lease, limit, now_ms.
-- Returns {'ok', {{txid, seq, {table, field, value, ...}}, ...}, {blocked txid, holders}, ...}
-- or {'lease_lost'}.

local lease, limit, now = ARGV[2], tonumber(ARGV[3]), ARGV[4]
if not lease_held(lease) then return {'lease_lost'} end

local window = redis.call('ZRANGE', prefix .. 'queue', 0, limit * 2 + 16, 'WITHSCORES')
local batch, blocked, tables = {}, {}, {}
for i = 1, #window, 2 do
  if #batch >= limit then break end
  local id, seq = window[i], window[i + 1]
  local txkey = prefix .. 'tx:' .. id
  local h = redis.call('HMGET', txkey, 'keys', 'entries')
  -- The dead letters at the root of what blocks the transaction, each
  -- once. A blocked holder is replaced by the dead letters that block it.
  local holders, seen = {}, {}
  local function add_root(root)
    if not seen[root] then
      seen[root] = true
      holders[#holders + 1] = root
    end
  end
  -- Two transactions that only refer to one record do not hold each
  -- other up; any other pair touching it does.
  if h[1] then
    for _, k in ipairs(cjson.decode(h[1])) do
      local record, reference = parse_key(k)
      local held = redis.call('HGET', prefix .. 'held', record)
      for token in string.gmatch(held or '', '%S+') do
        local holder = token
        local holder_refers = string.sub(token, -1) == '~'
        if holder_refers then holder = string.sub(token, 1, -2) end
        if not seen[holder] and not (reference and holder_refers) then
          local roots = redis.call('HGET', prefix .. 'tx:' .. holder, 'blocked_by')
          if roots and redis.call('ZSCORE', prefix .. 'blocked', holder) then
            seen[holder] = true
            for root in string.gmatch(roots, '%S+') do add_root(root) end
          else
            add_root(holder)
          end
        end
      end
    end
  end
  if #holders > 0 then
    local by = table.concat(holders, ' ')
    redis.call('ZREM', prefix .. 'queue', id)
    redis.call('ZADD', prefix .. 'blocked', seq, id)
    redis.call('HSET', txkey, 'state', 'blocked', 'blocked_by', by, 'blocked_ms', now)
    hold_keys(id, h[1])
    blocked[#blocked + 1] = {id, by}
  elseif h[2] then
    local flat = {}
    for _, pair in ipairs(cjson.decode(h[2])) do
      local tbl, field = pair[1], pair[2]
      flat[#flat + 1] = tbl
      flat[#flat + 1] = field
      flat[#flat + 1] = redis.call('HGET', prefix .. 'overlay:' .. tbl, field) or ''
      tables[tbl] = true
    end
    batch[#batch + 1] = {id, seq, flat}
  end
end
for tbl, _ in pairs(tables) do
  redis.call('INCR', prefix .. 'epoch:' .. tbl)
end
return {'ok', batch, blocked}
