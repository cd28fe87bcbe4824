#!lua
-- datastore_commit.lua: commit one write body (one or more positions) if,
-- and only if, everything the writer validated it against is unchanged:
-- the current job, the migration index (and emptiness), and every model the
-- body touches. Position numbers are assigned here, so writers that touch
-- different models never conflict (a bulk body is not starved by small
-- ones, SPEC 5.1).
--
-- The shebang (no flags) makes Redis refuse the whole script up front when
-- it is out of memory (OOM), instead of failing at its first write.
--
-- KEYS[1] ds:position        KEYS[2] ds:migration_index  KEYS[3] ds:event_count
-- KEYS[4] ds:positions       KEYS[5] ds:position_mi      KEYS[6] ds:events
-- KEYS[7] ds:collections     KEYS[8] job:current         KEYS[9] ds:writer_token
-- then, in this order:
--   the hash of the job the writer read (only when ARGV[1] is not "")
--   the idempotency record (only when ARGV[5] is not "")
--   c model hashes ds:models:<collection>, one per touched collection
-- ARGV[1] the id of the current job the writer read ("": none)
-- ARGV[2] "1" when the writer saw an empty datastore, else "0"
-- ARGV[3] the migration index the writer read ("": unset)
-- ARGV[4] the migration index of the new positions
-- ARGV[5] the idempotency owner token ("": the request has no key)
-- ARGV[6] how long the idempotency answer is kept, in ms
-- ARGV[7] n, the number of new positions
-- ARGV[8] the number of events they add
-- ARGV[9] m, the number of model writes
-- ARGV[10] the writer token this writer holds ("": none)
-- ARGV[11 ..]  n pairs: position metadata JSON, events JSON
-- then         m quintuples: model key index (1-based among the c model
--              hashes), id, SHA-1 hex of the stored JSON the writer read
--              ("": the model did not exist), r (the model's meta_position
--              is the body's r-th new position), the stored JSON without
--              meta_position (an object; "meta_deleted" included)
-- then         c collection names, in the order of the model hashes
--
-- Returns {"ok", first_position, answer_json}, {"conflict"},
-- {"finalizing"}, {"locked"} (another writer holds ds:writer_token: wait
-- for it) or {"claim_lost"} (the idempotency record is no longer this
-- writer's pending claim: nothing was written). A key of the wrong
-- type is a WRONGTYPE error naming the key, raised before any write.
--
-- Guarantees: every check happens before the first write, and the checks
-- and the writes are this one script, so a body is applied only on exactly
-- the state it was validated against, all or nothing: positions stay
-- gap-free (numbered here), concurrent bodies never interleave within a
-- position, two bodies never both create one fqid (the second sees the
-- model changed), nothing is written while a finalize job is current and
-- unfinished, and the idempotency answer is stored with the commit.

local function check_type(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then
    return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', the datastore expects a ' .. want)
  end
  return nil
end

local next_key = 10
local job_key = nil
if ARGV[1] ~= '' then
  job_key = KEYS[next_key]
  next_key = next_key + 1
end
local record = nil
if ARGV[5] ~= '' then
  record = KEYS[next_key]
  next_key = next_key + 1
end
local first_model_key = next_key

-- Types first: a wrong type found half way would leave a partial commit.
local expected_types = {
  {KEYS[1], 'string'}, {KEYS[2], 'string'}, {KEYS[3], 'string'},
  {KEYS[4], 'hash'}, {KEYS[5], 'hash'}, {KEYS[6], 'hash'}, {KEYS[7], 'set'},
  {KEYS[8], 'string'}, {KEYS[9], 'string'},
}
if record then expected_types[#expected_types + 1] = {record, 'hash'} end
for i = first_model_key, #KEYS do
  expected_types[#expected_types + 1] = {KEYS[i], 'hash'}
end
for _, pair in ipairs(expected_types) do
  local err = check_type(pair[1], pair[2])
  if err then return err end
end

local current_job = redis.call('GET', KEYS[8]) or ''
if current_job ~= ARGV[1] then
  return {'conflict'}
end
if job_key then
  local job = redis.call('HMGET', job_key, 'cmd', 'state')
  if job[1] == 'finalize' and job[2] ~= 'finished' then
    return {'finalizing'}
  end
end

-- A writer that lost several races holds the token: everyone else waits.
local holder = redis.call('GET', KEYS[9])
if holder and holder ~= ARGV[10] then
  return {'locked'}
end

if record then
  local claim = redis.call('HMGET', record, 'state', 'owner')
  if claim[1] ~= 'pending' or claim[2] ~= ARGV[5] then
    return {'claim_lost'}
  end
end

local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if not last then
  return redis.error_reply('CORRUPT ' .. KEYS[1] .. ' is not a number')
end
local mi = redis.call('GET', KEYS[2]) or ''
if mi ~= ARGV[3] or (ARGV[2] == '1' and last ~= 0) then
  return {'conflict'}
end

local n = tonumber(ARGV[7])
local m = tonumber(ARGV[9])
local models_at = 11 + 2 * n
for i = 0, m - 1 do
  local at = models_at + 5 * i
  local stored = redis.call('HGET', KEYS[first_model_key + tonumber(ARGV[at]) - 1], ARGV[at + 1])
  local expected = ARGV[at + 2]
  if expected == '' then
    if stored then return {'conflict'} end
  elseif not stored or redis.sha1hex(stored) ~= expected then
    return {'conflict'}
  end
end

-- Every check passed: write.
local arg = 11
local numbers = {}
for i = 1, n do
  local position = string.format('%d', last + i)
  numbers[i] = position
  redis.call('HSET', KEYS[4], position, ARGV[arg])
  redis.call('HSET', KEYS[6], position, ARGV[arg + 1])
  redis.call('HSET', KEYS[5], position, ARGV[4])
  arg = arg + 2
end
for i = 0, m - 1 do
  local at = models_at + 5 * i
  local key = KEYS[first_model_key + tonumber(ARGV[at]) - 1]
  local fields = ARGV[at + 4]
  local head = '{"meta_position":' .. numbers[tonumber(ARGV[at + 3])]
  local model
  if fields == '{}' then
    model = head .. '}'
  else
    model = head .. ',' .. string.sub(fields, 2)
  end
  redis.call('HSET', key, ARGV[at + 1], model)
end
local collections_at = models_at + 5 * m
for i = first_model_key, #KEYS do
  redis.call('SADD', KEYS[7], ARGV[collections_at + i - first_model_key])
end
redis.call('SET', KEYS[1], string.format('%d', last + n))
if mi == '' then
  redis.call('SET', KEYS[2], ARGV[4])
end
redis.call('INCRBY', KEYS[3], ARGV[8])
if holder then
  redis.call('UNLINK', KEYS[9])
end

local answer = '{"positions":[' .. table.concat(numbers, ',') .. '],"success":true}'
if record then
  redis.call('HSET', record, 'state', 'done', 'status', '200', 'answer', answer)
  redis.call('PEXPIRE', record, ARGV[6])
end
return {'ok', last + 1, answer}
