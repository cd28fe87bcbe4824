-- datastore_commit.lua: commit one write body (one or more positions) if,
-- and only if, the datastore is still in the state the writer validated it
-- against.
--
-- KEYS[1] ds:position        KEYS[2] ds:migration_index  KEYS[3] ds:event_count
-- KEYS[4] ds:positions       KEYS[5] ds:position_mi      KEYS[6] ds:events
-- KEYS[7] ds:collections     KEYS[8] job:current
-- ARGV[1] the last position the writer read ("0": empty datastore)
-- ARGV[2] the migration index the writer read ("": unset)
-- ARGV[3] the migration index of the new positions
-- ARGV[4] the key base "{PREFIX}:" (job hashes are "{PREFIX}:job:<id>")
-- ARGV[5] n, the number of new positions
-- ARGV[6] the number of events they add
-- ARGV[7] m, the number of model writes
-- ARGV[8 ..]      n pairs: position metadata JSON, events JSON
-- then            m triples: collection, id, model JSON
--
-- Returns {"ok", first_position}, {"conflict"} or {"finalizing"}.
--
-- Guarantees: every commit moves ds:position, and the comparison and the
-- writes happen in this one script, so a body is applied only on exactly the
-- state it was validated against: positions stay gap-free, concurrent bodies
-- never interleave and never both create one fqid. While a finalize job is
-- current and unfinished nothing is written (SPEC 5.1).

local job_id = redis.call('GET', KEYS[8])
if job_id then
  local job = redis.call('HMGET', ARGV[4] .. 'job:' .. job_id, 'cmd', 'state')
  if job[1] == 'finalize' and job[2] ~= 'finished' then
    return {'finalizing'}
  end
end

local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local mi = redis.call('GET', KEYS[2]) or ''
if last ~= tonumber(ARGV[1]) or mi ~= ARGV[2] then
  return {'conflict'}
end

local n = tonumber(ARGV[5])
local m = tonumber(ARGV[7])
local arg = 8
for i = 1, n do
  local position = last + i
  redis.call('HSET', KEYS[4], position, ARGV[arg])
  redis.call('HSET', KEYS[6], position, ARGV[arg + 1])
  redis.call('HSET', KEYS[5], position, ARGV[3])
  arg = arg + 2
end
for _ = 1, m do
  local collection = ARGV[arg]
  redis.call('HSET', ARGV[4] .. 'ds:models:' .. collection, ARGV[arg + 1], ARGV[arg + 2])
  redis.call('SADD', KEYS[7], collection)
  arg = arg + 3
end
redis.call('SET', KEYS[1], last + n)
if mi == '' then
  redis.call('SET', KEYS[2], ARGV[3])
end
redis.call('INCRBY', KEYS[3], ARGV[6])
return {'ok', last + 1}
