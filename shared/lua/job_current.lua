-- job_current: read the current job's record in one atomic step.
--
-- KEYS[1] job:current   (string)
-- KEYS[2] job:{id}      (hash; id = ARGV[1])
-- ARGV[1] the id the caller read from job:current (re-checked here)
--
-- Returns {'none'} when there is no current job, {'stale'} when
-- job:current is no longer ARGV[1] (read it again), else {'record'}
-- followed by the HGETALL of the job (flat field/value list).
--
-- Guarantees: the id and the record belong together (no enqueue in between).

local id = redis.call('GET', KEYS[1])
if not id then return {'none'} end
if id ~= ARGV[1] then return {'stale'} end
local reply = redis.call('HGETALL', KEYS[2])
table.insert(reply, 1, 'record')
return reply
