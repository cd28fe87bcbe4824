-- lock_renew: extend the lease of the global lock, only for its holder.
--
-- KEYS[1] lock                   (hash job_id, worker_id, fencing_token; PEXPIRE = lease)
-- KEYS[2] lock:fencing_counter   (string: the last fencing token handed out)
-- ARGV[1] the caller's fencing token
-- ARGV[2] lease in ms
--
-- Returns 1 when renewed, 0 when the lock expired or is held with another
-- token (the caller lost it and must stop at once).
--
-- Guarantees: a worker that lost its lease can never extend someone else's.
-- A refused caller raises lock:fencing_counter to its own token when the
-- counter is below it (Redis lost the writes that handed the token out),
-- so no later claim can hand out a token it still holds, whatever the
-- clock says (docs/redis-keys.md, "Fencing tokens").

if redis.call('HGET', KEYS[1], 'fencing_token') == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
local token = tonumber(ARGV[1])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if token and last and token > last then
  redis.call('SET', KEYS[2], ARGV[1])
end
return 0
