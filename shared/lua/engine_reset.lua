-- engine_reset: deletes the whole migration area (never live data).
--
-- KEYS[1] lock            (hash: fencing_token)
-- KEYS[2] mig:keys        (set: every migration-area key)
-- KEYS[3] mig:state       KEYS[4] mig:events
-- KEYS[5] mig:position_mi KEYS[6] mig:mi_counts
-- KEYS[7..] every member of mig:keys, as the caller read it
--
-- ARGV[1] fencing token of the caller
--
-- Guarantees: refuses (FENCED) unless the caller holds the lock, and (STALE)
-- unless KEYS[7..] are exactly the members of mig:keys (the caller reads the
-- set again and retries); otherwise deletes them and the fixed keys,
-- atomically, with UNLINK (freed in the background). Returns the number of
-- positions that had migration data. Running it twice is harmless: the second
-- run finds nothing and returns 0.
if redis.call('HGET', KEYS[1], 'fencing_token') ~= ARGV[1] then
  return redis.error_reply('FENCED fencing token ' .. ARGV[1] .. ' no longer holds the lock')
end
if redis.call('SCARD', KEYS[2]) ~= #KEYS - 6 then
  return redis.error_reply('STALE the migration area keys changed since they were read')
end
for k = 7, #KEYS do
  if redis.call('SISMEMBER', KEYS[2], KEYS[k]) == 0 then
    return redis.error_reply('STALE the migration area keys changed since they were read')
  end
end
local positions = redis.call('HLEN', KEYS[5])
for k = 7, #KEYS do
  redis.call('UNLINK', KEYS[k])
end
redis.call('UNLINK', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
return positions
