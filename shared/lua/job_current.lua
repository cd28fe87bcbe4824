-- job_current: read the current job's record in one atomic step.
--
-- KEYS[1] job:current   (string)
-- ARGV[1] the key base `{PREFIX}:` (job keys as in shared/src/keys.rs)
--
-- Returns the HGETALL of the current job (flat field/value list), or an
-- empty list when there is none.
--
-- Guarantees: the id and the record belong together (no enqueue in between).

local id = redis.call('GET', KEYS[1])
if not id then return {} end
return redis.call('HGETALL', ARGV[1] .. 'job:' .. id)
