-- job_hand_back: a stopping worker gives its job back to the queue, fenced.
--
-- KEYS[1] lock              (hash; field fencing_token)
-- KEYS[2] job:{id}          (hash)
-- KEYS[3] job:{id}:output   (stream)
-- KEYS[4] job:wakeup        (list)
-- ARGV[1] the caller's fencing token
-- ARGV[2] the line saying so
-- ARGV[3] the job id (the wake-up signal)
--
-- Returns 1, or 0 when the token is not the lock's (nothing changed).
--
-- Guarantees: the job becomes `queued` and the lock free in one step, so
-- another worker continues at once (no waiting for the lease); a worker that
-- already lost the lock cannot hand back a job someone else runs.

if redis.call('HGET', KEYS[1], 'fencing_token') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[2], 'state', 'queued')
redis.call('DEL', KEYS[1])
redis.call('XADD', KEYS[3], '*', 'line', ARGV[2])
redis.call('HINCRBY', KEYS[2], 'output_lines', 1)
redis.call('LPUSH', KEYS[4], ARGV[3])
redis.call('LTRIM', KEYS[4], 0, 15)
return 1
