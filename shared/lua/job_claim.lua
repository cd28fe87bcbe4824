-- job_claim: a worker takes the current job, if it may, and becomes the
-- holder of the global lock with a new fencing token.
--
-- KEYS[1] job:current            (string)
-- KEYS[2] lock                   (hash job_id, worker_id, fencing_token; PEXPIRE = lease)
-- KEYS[3] lock:fencing_counter   (string: the last fencing token handed out)
-- KEYS[4] job:{id}               (hash; id = ARGV[1])
-- KEYS[5] job:{id}:output        (stream)
-- KEYS[6] metrics                (hash; shared/src/metrics.rs)
-- ARGV[1] the id the caller read from job:current (re-checked here)
-- ARGV[2] worker id
-- ARGV[3] the worker's registry fingerprint
-- ARGV[4] lease in ms (WORKER_LOCK_TTL_MS)
-- ARGV[5] how many takeovers a job may have before it is abandoned
-- ARGV[6] '1' when this worker resumes ARGV[1] after losing touch with
--         Redis (its own job: not a takeover), '0' otherwise
-- ARGV[7] the job duration histogram's bucket bounds in seconds, space-separated
--
-- Returns one of
--   {'stale'}                      job:current is no longer ARGV[1]: read it again
--   {'idle'}                       no current job, or it has finished
--   {'busy', id}                   the job is running under a live lease
--   {'refused', id, fingerprint}   registry mismatch: the job was finished with an exception
--   {'abandoned', id}              too many takeovers: finished with an exception
--   {'claimed', id, cmd, verbose, fencing_token, attempts, output_lines, how}
--     how: 'started' | 'continued' (handed back) | 'taken_over' | 'resumed'
--
-- Guarantees: a job is claimed only when it is queued, or running with an
-- expired lease (takeover, counted in `attempts`, said in the output), or
-- running as the resuming caller's own job (its lease expired or still its
-- own, never another worker's: not counted); every claim hands out a fencing
-- token larger than every token handed out before, by this Redis's counter
-- AND by its clock (max(last + 1, TIME in microseconds)), so a token stays
-- unique even after Redis lost the counter's last writes (docs/redis-keys.md,
-- "Fencing tokens"); a job is never run by a worker whose registry differs
-- from the api's that accepted it. A refused job counts as an `exception`,
-- an abandoned one as `abandoned`, and every takeover in `takeovers`, in
-- `metrics`, in the same step.

-- >>> metrics (shared/src/metrics.rs): count the job's outcome and observe
-- its duration (since its first claim, else since it was accepted) in the
-- histogram bucket of the first bound (seconds, ARGV) it does not exceed
local function count_outcome(metrics, job, result, now, bounds)
  if not metrics then
    return -- no metrics key given: count nothing rather than fail mid-script
  end
  local cmd = redis.call('HGET', job, 'cmd') or 'unknown'
  local since = redis.call('HGET', job, 'started_at') or redis.call('HGET', job, 'created_at') or now
  local ms = math.max(0, tonumber(now) - tonumber(since))
  local bucket = '+Inf'
  for bound in string.gmatch(bounds, '%S+') do
    if ms <= tonumber(bound) * 1000 then
      bucket = bound
      break
    end
  end
  local duration = 'duration:' .. cmd .. ':'
  redis.call('HINCRBY', metrics, 'jobs:' .. cmd .. ':' .. result, 1)
  redis.call('HINCRBY', metrics, duration .. 'le:' .. bucket, 1)
  redis.call('HINCRBY', metrics, duration .. 'count', 1)
  redis.call('HINCRBY', metrics, duration .. 'sum_ms', ms)
end
-- <<< metrics

local current = redis.call('GET', KEYS[1])
if not current then return {'idle'} end
if current ~= ARGV[1] then return {'stale'} end
local id = current
local job = KEYS[4]
local output = KEYS[5]
local state = redis.call('HGET', job, 'state')
if state ~= 'queued' and state ~= 'running' then return {'idle'} end

local worker = ARGV[2]
local previous = redis.call('HGET', job, 'worker_id') or ''
local resuming = ARGV[6] == '1' and state == 'running' and previous == worker

if redis.call('EXISTS', KEYS[2]) == 1 then
  local holder_job = redis.call('HGET', KEYS[2], 'job_id')
  local holder = redis.call('HGET', KEYS[2], 'worker_id')
  if holder_job == id and not (resuming and holder == worker) then
    return {'busy', id}
  end
  -- Our own live lease (we stopped our run before resuming) is replaced by
  -- a new token. A lease naming another job cannot outlive that job
  -- (finishing deletes it); if one does, it is stale: replacing it fences
  -- its holder out.
end

local time = redis.call('TIME')
local now = string.format('%d', tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))

local function append(line)
  redis.call('XADD', output, '*', 'line', line)
  redis.call('HINCRBY', job, 'output_lines', 1)
end

local function finish(exception)
  redis.call('HSET', job, 'state', 'finished', 'finished_at', now, 'exception', exception)
  redis.call('DEL', KEYS[2])
  redis.call('XADD', output, '*', 'control', 'finished')
end

local function count(field)
  local value = redis.call('HGET', job, field) or '0'
  local number = tonumber(value)
  if not number then
    error('job ' .. id .. ' field ' .. field .. ' is not a number: ' .. value)
  end
  return number
end

local job_fingerprint = redis.call('HGET', job, 'fingerprint') or ''
if job_fingerprint ~= ARGV[3] then
  local message = 'Migrations fingerprint mismatch: job ' .. id ..
    ' was accepted with migrations fingerprint ' .. job_fingerprint ..
    ' but worker ' .. worker .. ' has migrations fingerprint ' .. ARGV[3] ..
    '; deploy the same MIGRATIONS_FILE to the api and the workers'
  append('Worker ' .. worker .. ' refuses job ' .. id .. ': ' .. message)
  finish(message)
  count_outcome(KEYS[6], job, 'exception', now, ARGV[7]) -- metrics
  return {'refused', id, job_fingerprint}
end

local attempts = count('attempts')
local how
if resuming then
  how = 'resumed'
  append('Worker ' .. worker .. ' resumes job ' .. id ..
    ' on its own lease after losing touch with Redis (not a takeover)')
elseif state == 'running' then
  local max_takeovers = tonumber(ARGV[5])
  if attempts >= max_takeovers then
    local message = 'Job ' .. id .. ' abandoned: the lease of its worker (last: ' ..
      previous .. ') expired again after ' .. attempts .. ' takeovers'
    append(message)
    finish(message)
    count_outcome(KEYS[6], job, 'abandoned', now, ARGV[7]) -- metrics
    return {'abandoned', id}
  end
  attempts = attempts + 1
  how = 'taken_over'
  redis.call('HSET', job, 'attempts', attempts)
  if KEYS[6] then redis.call('HINCRBY', KEYS[6], 'takeovers', 1) end -- metrics
  append('Worker ' .. worker .. ' took the job over from worker ' .. previous ..
    ' (its lease expired; takeover ' .. attempts .. ' of ' .. max_takeovers .. ')')
elseif previous ~= '' then
  how = 'continued'
  append('Worker ' .. worker .. ' continues job ' .. id .. ' (handed back by worker ' .. previous .. ')')
else
  how = 'started'
  append('Worker ' .. worker .. ' started job ' .. id)
end

-- The token: above the last one this Redis remembers, and never below its
-- clock in microseconds. Both stay below 2^53, so Lua's doubles hold them
-- exactly.
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
if not last then
  error('lock:fencing_counter is not a number')
end
local clock = tonumber(time[1]) * 1000000 + tonumber(time[2])
local token = string.format('%d', math.max(last + 1, clock))
redis.call('SET', KEYS[3], token)
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'job_id', id, 'worker_id', worker, 'fencing_token', token)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('HSET', job, 'state', 'running', 'worker_id', worker)
if not redis.call('HGET', job, 'started_at') then
  redis.call('HSET', job, 'started_at', now)
end
return {'claimed', id, redis.call('HGET', job, 'cmd') or '', redis.call('HGET', job, 'verbose') or '0',
  token, string.format('%d', attempts), string.format('%d', count('output_lines')), how}
