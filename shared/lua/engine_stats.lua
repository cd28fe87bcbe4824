-- engine_stats: one consistent snapshot of the counters `stats` needs.
--
-- KEYS[1] ds:position        (string: last position; absent = empty datastore)
-- KEYS[2] ds:migration_index (string: live MI)
-- KEYS[3] ds:event_count     (string: live events)
-- KEYS[4] mig:state          (hash: cursor, target, fingerprint)
-- KEYS[5] mig:mi_counts      (hash: migrated MI -> positions at it)
--
-- Returns {position, migration_index, event_count, state_target,
-- state_fingerprint, mi_counts (flat HGETALL list)}; missing values are false.
-- Guarantees: the values come from one instant (a script runs atomically), so
-- a checkpoint or a finalize is never seen half-done. Reads only counters:
-- O(number of distinct migrated MIs), never a scan of the positions.
return {
  redis.call('GET', KEYS[1]),
  redis.call('GET', KEYS[2]),
  redis.call('GET', KEYS[3]),
  redis.call('HGET', KEYS[4], 'target'),
  redis.call('HGET', KEYS[4], 'fingerprint'),
  redis.call('HGETALL', KEYS[5]),
}
