-- lock_renew: extend the lease of the global lock, only for its holder.
--
-- KEYS[1] lock   (hash job_id, worker_id, fencing_token; PEXPIRE = lease)
-- ARGV[1] the caller's fencing token
-- ARGV[2] lease in ms
--
-- Returns 1 when renewed, 0 when the lock expired or is held with another
-- token (the caller lost it and must stop at once).
--
-- Guarantees: a worker that lost its lease can never extend someone else's.

if redis.call('HGET', KEYS[1], 'fencing_token') == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
