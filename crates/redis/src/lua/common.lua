-- Helpers shared by every opsbuffer script; each script is this file
-- followed by its own text. ARGV[1] is the site prefix "{site}:". Every key
-- starts with it, and its braces make it a hash tag, so all keys of a site
-- live in one Redis Cluster slot and one script can touch them all.

local prefix = ARGV[1]

-- The per-record state "c,d,n": a create pending (0/1), a delete pending
-- (0/1), and the number of overlay entries of the record.
local function rec_get(tbl, key)
  local s = redis.call('HGET', prefix .. 'rec:' .. tbl, key)
  if not s then return 0, 0, 0 end
  local c, d, n = string.match(s, '^(%d),(%d),(%d+)$')
  return tonumber(c), tonumber(d), tonumber(n)
end

local function rec_set(tbl, key, c, d, n)
  if n <= 0 then
    redis.call('HDEL', prefix .. 'rec:' .. tbl, key)
  else
    redis.call('HSET', prefix .. 'rec:' .. tbl, key, c .. ',' .. d .. ',' .. n)
  end
end

-- An entry name is "{seq:016}:{index:06}:{kind}:{key}".
local function parse_field(field)
  return string.match(field, '^(%d+):(%d+):(%a):(.*)$')
end

-- Every change of a table's overlays bumps its version and logs the changed
-- entry names, so a reader with a cached copy fetches only what changed.
local LOG_MAX = 20000

local function bump_version(tbl)
  return redis.call('INCR', prefix .. 'ver:' .. tbl)
end

local function log_change(tbl, ver, op, field)
  redis.call('ZADD', prefix .. 'log:' .. tbl, ver, ver .. '|' .. op .. '|' .. field)
end

-- Keeps the log at LOG_MAX entries; "logfloor" is the newest version cut
-- off, so a reader whose copy is older than it reloads everything.
local function trim_log(tbl)
  local logkey = prefix .. 'log:' .. tbl
  local n = redis.call('ZCARD', logkey)
  if n > LOG_MAX then
    local cut = n - LOG_MAX
    local last = redis.call('ZRANGE', logkey, cut - 1, cut - 1, 'WITHSCORES')
    redis.call('ZREMRANGEBYRANK', logkey, 0, cut - 1)
    redis.call('SET', prefix .. 'logfloor:' .. tbl, last[2])
  end
end

-- Removes one overlay entry and updates its record's state. Removing a
-- create means local has the record (eviction) or nobody ever will
-- (discard); either way the buffer no longer holds the record itself.
local function remove_entry(tbl, field, ver)
  local removed = redis.call('HDEL', prefix .. 'overlay:' .. tbl, field)
  if removed == 1 then
    local _, _, kind, key = parse_field(field)
    local c, d, n = rec_get(tbl, key)
    if kind == 'c' then c = 0 end
    if kind == 'd' then d = 0 end
    rec_set(tbl, key, c, d, n - 1)
    log_change(tbl, ver, '-', field)
  end
  return removed
end

-- How long the key of a record whose delete reached local is remembered,
-- in milliseconds. A write checked against an older read of local is then
-- refused instead of reaching main for a record that no longer exists.
local GONE_MS = 600000

local function remember_gone(tbl, field, now)
  local _, _, kind, key = parse_field(field)
  if kind == 'd' then
    local gone = prefix .. 'gone:' .. tbl
    redis.call('ZADD', gone, now, key)
    redis.call('ZREMRANGEBYSCORE', gone, '-inf', tonumber(now) - GONE_MS)
  end
end

-- Removes every overlay entry of a transaction, bumping each table's
-- version once. With `now`, the keys of evicted deletes are remembered.
local function remove_entries(entries_json, now)
  if not entries_json then return end
  local versions = {}
  for _, pair in ipairs(cjson.decode(entries_json)) do
    local tbl, field = pair[1], pair[2]
    if not versions[tbl] then versions[tbl] = bump_version(tbl) end
    if remove_entry(tbl, field, versions[tbl]) == 1 and now then
      remember_gone(tbl, field, now)
    end
  end
  for tbl, _ in pairs(versions) do trim_log(tbl) end
end

-- A guard counts the pending transactions that wrote something a later
-- write's checks depend on: "u:{hash}" a value of a unique constraint,
-- "r:{key}" a reference to record {key}, "w:{key}" an update of record
-- {key}. A transaction's guards are a JSON list of [table, field, n] and
-- count until it is evicted or discarded.
local function add_guards(guards_json, sign)
  if not guards_json or guards_json == '' then return end
  for _, g in ipairs(cjson.decode(guards_json)) do
    local hash = prefix .. 'guard:' .. g[1]
    local n = redis.call('HINCRBY', hash, g[2], sign * tonumber(g[3]))
    if n <= 0 then redis.call('HDEL', hash, g[2]) end
  end
end

-- Releases the guards of a transaction once, however often it is called.
local function release_guards(txkey)
  add_guards(redis.call('HGET', txkey, 'guards'), -1)
  redis.call('HDEL', txkey, 'guards')
end

-- A transaction's "keys" name the records it touches as "table\31key",
-- with a leading "~" for a record it only refers to. Returns the record
-- and whether it is only referred to.
local function parse_key(k)
  if string.sub(k, 1, 1) == '~' then return string.sub(k, 2), true end
  return k, false
end

-- "held" maps a record ("table\31key") to the space-separated ids of the
-- dead-lettered or blocked transactions that touch it, each followed by
-- "~" when the transaction only refers to the record.
local function hold_keys(txid, keys_json)
  if not keys_json then return end
  for _, k in ipairs(cjson.decode(keys_json)) do
    local record, reference = parse_key(k)
    local token = txid
    if reference then token = txid .. '~' end
    local cur = redis.call('HGET', prefix .. 'held', record)
    if cur then
      redis.call('HSET', prefix .. 'held', record, cur .. ' ' .. token)
    else
      redis.call('HSET', prefix .. 'held', record, token)
    end
  end
end

local function release_keys(txid, keys_json)
  if not keys_json then return end
  for _, k in ipairs(cjson.decode(keys_json)) do
    local record = parse_key(k)
    local cur = redis.call('HGET', prefix .. 'held', record)
    if cur then
      local rest = {}
      for token in string.gmatch(cur, '%S+') do
        if token ~= txid and token ~= txid .. '~' then rest[#rest + 1] = token end
      end
      if #rest == 0 then
        redis.call('HDEL', prefix .. 'held', record)
      else
        redis.call('HSET', prefix .. 'held', record, table.concat(rest, ' '))
      end
    end
  end
end

-- Puts every blocked transaction back in the queue at its own sequence
-- number; the drainer blocks again those that still touch a held record.
local function unblock_all(now)
  local blocked = redis.call('ZRANGE', prefix .. 'blocked', 0, -1, 'WITHSCORES')
  for i = 1, #blocked, 2 do
    local id, seq = blocked[i], blocked[i + 1]
    local txkey = prefix .. 'tx:' .. id
    release_keys(id, redis.call('HGET', txkey, 'keys'))
    redis.call('ZADD', prefix .. 'queue', seq, id)
    redis.call('HSET', txkey, 'state', 'queued', 'requeued_ms', now)
    redis.call('HDEL', txkey, 'blocked_by')
  end
  redis.call('DEL', prefix .. 'blocked')
  return #blocked / 2
end

local function lease_held(lease)
  return redis.call('GET', prefix .. 'drainer') == lease
end

