-- output_append: append a batch of output lines of the running job, fenced.
--
-- KEYS[1] lock                 (hash; field fencing_token)
-- KEYS[2] job:{id}             (hash; field output_lines = lines in the stream)
-- KEYS[3] job:{id}:output      (stream; one entry per line, field `line`)
-- ARGV[1] the caller's fencing token
-- ARGV[2] how many lines the caller knows are in the stream before this batch
-- ARGV[3..] the lines, in order
--
-- Returns the number of lines in the stream after the call, or -1 when the
-- token is not the lock's (nothing written).
--
-- Guarantees: only the lock holder writes output; lines keep their order;
-- a batch retried after a lost reply is not written twice (lines the stream
-- already holds are skipped, counted by ARGV[2] against output_lines).

if redis.call('HGET', KEYS[1], 'fencing_token') ~= ARGV[1] then
  return -1
end
local written = tonumber(redis.call('HGET', KEYS[2], 'output_lines') or '0')
local skip = written - tonumber(ARGV[2])
if skip < 0 then skip = 0 end
for i = 3 + skip, #ARGV do
  redis.call('XADD', KEYS[3], '*', 'line', ARGV[i])
  written = written + 1
end
redis.call('HSET', KEYS[2], 'output_lines', written)
return written
