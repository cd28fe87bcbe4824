-- job_current: read the current job's record in one atomic step.
--
-- KEYS[1] job:current   (string)
-- KEYS[2] job:{id}      (hash; id = ARGV[1])
-- ARGV[1] the id the caller believes is current (re-checked here)
--
-- Returns {'none'} when there is no current job, {'stale', id} when
-- job:current is `id`, not ARGV[1] (call again with it), else {'record'}
-- followed by the HGETALL of the job (flat field/value list).
--
-- Guarantees: the id and the record belong together (no enqueue in between).

local id = redis.call('GET', KEYS[1])
if not id then return {'none'} end
if id ~= ARGV[1] then return {'stale', id} end
local reply = redis.call('HGETALL', KEYS[2])
table.insert(reply, 1, 'record')
return reply
