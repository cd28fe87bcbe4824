#!lua
-- datastore_idempotency_begin.lua: claim an Idempotency-Key for one write,
-- or say what became of it (SPEC 5.1).
--
-- KEYS[1] ds:idempotency:<key>, a hash: state ("pending" | "done"),
--         fingerprint, owner, and once done: status, answer
-- ARGV[1] the body's fingerprint (SHA-1 hex of its canonical JSON)
-- ARGV[2] a fresh owner token for this attempt
-- ARGV[3] how long a pending claim lives, in ms
--
-- Returns {"new"} (claimed: this attempt executes the write),
-- {"mismatch"} (the key was used with another body), {"pending"}
-- (another attempt holds the claim) or {"done", status, answer}.
--
-- Guarantee: of any number of attempts with one key, at most one holds the
-- claim at a time, and only the holder's commit script writes (it checks
-- the owner). A claim whose holder died expires after ARGV[3] ms; the
-- answer of a finished write is kept by the commit (or settle) script.

local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'none' and t ~= 'hash' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[1] .. ' holds a ' .. t .. ', the datastore expects a hash')
end
local record = redis.call('HMGET', KEYS[1], 'state', 'fingerprint', 'status', 'answer')
if record[1] then
  if record[2] ~= ARGV[1] then
    return {'mismatch'}
  end
  if record[1] == 'done' then
    return {'done', record[3], record[4]}
  end
  return {'pending'}
end
redis.call('HSET', KEYS[1], 'state', 'pending', 'fingerprint', ARGV[1], 'owner', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {'new'}
