-- Reads, for each table, its overlay version, its drain epoch, the buffer's
-- generation, and what changed since the version the caller has cached:
-- nothing ("same"), the changed entries from the change log ("delta", with
-- '' for an entry removed since), or every entry ("full"). One script, so
-- the overlays and the epoch are read at the same instant.
--
-- ARGV: prefix, then per table (table, cached version or -1).

local gen = redis.call('GET', prefix .. 'gen') or ''
local out = {gen}
local i = 2
while i <= #ARGV do
  local tbl, known = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local ver = tonumber(redis.call('GET', prefix .. 'ver:' .. tbl) or '0')
  local epoch = tonumber(redis.call('GET', prefix .. 'epoch:' .. tbl) or '0')
  if known == ver then
    out[#out + 1] = {ver, epoch, 'same', {}}
  else
    local floor = tonumber(redis.call('GET', prefix .. 'logfloor:' .. tbl) or '0')
    if known >= 0 and known >= floor and known < ver then
      local changes = redis.call('ZRANGEBYSCORE', prefix .. 'log:' .. tbl, '(' .. known, '+inf')
      local last, order = {}, {}
      for _, member in ipairs(changes) do
        local op, field = string.match(member, '^%d+|(.)|(.*)$')
        if last[field] == nil then order[#order + 1] = field end
        last[field] = op
      end
      local flat = {}
      for _, field in ipairs(order) do
        local value = false
        if last[field] == '+' then value = redis.call('HGET', prefix .. 'overlay:' .. tbl, field) end
        flat[#flat + 1] = field
        flat[#flat + 1] = value or ''
      end
      out[#out + 1] = {ver, epoch, 'delta', flat}
    else
      out[#out + 1] = {ver, epoch, 'full', redis.call('HGETALL', prefix .. 'overlay:' .. tbl)}
    end
  end
end
return out
