-- engine_reset: deletes the whole migration area (never live data).
--
-- KEYS[1] lock            (hash: fencing_token)
-- KEYS[2] mig:keys        (set: every migration-area key)
-- KEYS[3] mig:state       KEYS[4] mig:events
-- KEYS[5] mig:position_mi KEYS[6] mig:mi_counts
--
-- ARGV[1] fencing token of the caller
--
-- Guarantees: refuses (FENCED) unless the caller holds the lock; otherwise
-- deletes every key listed in mig:keys (all under the prefix's hash tag, so
-- in the script's Cluster slot) and the fixed ones, atomically, with UNLINK
-- (freed in the background). Returns the number of positions that had
-- migration data.
if redis.call('HGET', KEYS[1], 'fencing_token') ~= ARGV[1] then
  return redis.error_reply('FENCED fencing token ' .. ARGV[1] .. ' no longer holds the lock')
end
local positions = redis.call('HLEN', KEYS[5])
for _, key in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  redis.call('UNLINK', key)
end
redis.call('UNLINK', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
return positions
