-- job_mark_read: record that a finished job's final result was returned.
--
-- KEYS[1] job:{id}   (hash)
--
-- Returns 1 when marked, 0 when the job is not finished (or gone).
--
-- Guarantees: only a finished job is marked, so a result still to come can
-- never be skipped by a new command (job_enqueue checks `result_read`).

if redis.call('HGET', KEYS[1], 'state') == 'finished' then
  redis.call('HSET', KEYS[1], 'result_read', '1')
  return 1
end
return 0
