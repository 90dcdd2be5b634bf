-- The drainer lease: "{holder}|{token}" with a TTL. The token comes from a
-- counter that only grows, so it fences out a holder that lost the lease.
--
-- ARGV: prefix, action (acquire, renew, release), holder or lease value,
-- ttl_ms. acquire returns the lease value, or '' when another holder has
-- it; renew and release return 1 when the caller held the lease.

local action, arg, ttl = ARGV[2], ARGV[3], ARGV[4]
local key = prefix .. 'drainer'
local current = redis.call('GET', key)
if action == 'acquire' then
  if current then
    if string.match(current, '^(.-)|') == arg then
      redis.call('PEXPIRE', key, ttl)
      return current
    end
    return ''
  end
  local token = redis.call('INCR', prefix .. 'fence')
  local value = arg .. '|' .. token
  redis.call('SET', key, value, 'PX', ttl)
  return value
elseif action == 'renew' then
  if current == arg then
    redis.call('PEXPIRE', key, ttl)
    return 1
  end
  return 0
elseif action == 'release' then
  if current == arg then
    redis.call('DEL', key)
    return 1
  end
  return 0
end
return redis.error_reply('unknown lease action ' .. tostring(action))
