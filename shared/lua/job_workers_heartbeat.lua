-- job_workers_heartbeat: a worker says it is alive until now + ttl.
--
-- KEYS[1] workers   (sorted set: worker id -> presence expiry, ms, Redis time)
-- ARGV[1] worker id
-- ARGV[2] presence ttl in ms
--
-- Returns the number of live workers.
--
-- Guarantees: expiries use Redis's clock only (workers' clocks may differ);
-- expired members are removed here, so the set stays small.

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[2])), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', now))
return redis.call('ZCOUNT', KEYS[1], string.format('%d', now), '+inf')
