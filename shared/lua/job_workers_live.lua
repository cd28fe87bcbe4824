-- job_workers_live: count the live workers (read only).
--
-- KEYS[1] workers   (sorted set: worker id -> presence expiry, ms, Redis time)
--
-- Returns the number of members whose expiry is not yet past, by Redis's clock.

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], string.format('%d', now), '+inf')
