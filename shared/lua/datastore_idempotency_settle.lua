-- datastore_idempotency_settle.lua: end a claim taken by
-- datastore_idempotency_begin.lua without a commit: keep a refusal as the
-- key's answer ("store", e.g. a 400), or give the key back ("release", the
-- write was certainly not executed: finalizing, too busy).
--
-- KEYS[1] ds:idempotency:<key>
-- ARGV[1] the owner token of the claim
-- ARGV[2] "store" or "release"
-- ARGV[3] the HTTP status to keep (store)
-- ARGV[4] the answer body to keep (store)
-- ARGV[5] how long the answer is kept, in ms (store)
--
-- Returns 1 when settled, 0 when the claim is no longer this owner's
-- (expired, or taken over): then nothing is changed.

local claim = redis.call('HMGET', KEYS[1], 'state', 'owner')
if claim[1] ~= 'pending' or claim[2] ~= ARGV[1] then
  return 0
end
if ARGV[2] == 'release' then
  redis.call('UNLINK', KEYS[1])
  return 1
end
redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[3], 'answer', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
