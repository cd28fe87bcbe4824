-- job_finish: finish the running job, fenced.
--
-- KEYS[1] lock              (hash; field fencing_token)
-- KEYS[2] job:{id}          (hash)
-- KEYS[3] job:{id}:output   (stream)
-- ARGV[1] the caller's fencing token
-- ARGV[2] the exception ('' = the command succeeded)
--
-- Returns 1, or 0 when the token is not the lock's (nothing changed).
--
-- Guarantees: only the lock holder finishes the job; the state, exception
-- and finish time change together with the release of the lock; a control
-- entry (field `control` = `finished`) wakes every waiter blocked on the
-- output stream (XREAD BLOCK), so nobody polls.

if redis.call('HGET', KEYS[1], 'fencing_token') ~= ARGV[1] then
  return 0
end
local time = redis.call('TIME')
local now = string.format('%d', tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))
redis.call('HSET', KEYS[2], 'state', 'finished', 'finished_at', now)
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[2], 'exception', ARGV[2])
end
redis.call('DEL', KEYS[1])
redis.call('XADD', KEYS[3], '*', 'control', 'finished')
return 1
