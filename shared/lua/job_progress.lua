-- job_progress: the current job's record and the output entries a reader
-- has not seen yet, in one atomic step (one round trip per `progress`).
--
-- KEYS[1] job:current          (string: the current job's id)
-- KEYS[2] job:{id}             (hash: the job the caller expects to be current)
-- KEYS[3] job:{id}:output      (stream: that job's output)
-- ARGV[1] {id}, the job the caller expects ('' when it expects none)
-- ARGV[2] where to start reading: '-' for the beginning, '(<entry id>' for
--         after the last entry the caller has read
-- ARGV[3] at most this many entries
--
-- Returns
--   {}                                   no current job;
--   {'other', <current id>}              the current job is not ARGV[1]: call
--                                        again with that id's keys;
--   {'job', <HMGET of KEYS[2] id cmd state exception
--    result_read>,
--    <XLEN of KEYS[3]>, <XRANGE entries>} (only the fields progress needs:
--   a poll's reply stays small).
--
-- Guarantees: the record, the stream length and the entries are of the same
-- moment, so a reader that has read N entries and now gets M more can check
-- N + M against the length (entries lost by Redis show as a mismatch). Only
-- reads: nothing is written.

local id = redis.call('GET', KEYS[1])
if not id then return {} end
if id ~= ARGV[1] then return {'other', id} end
local entries = redis.call('XRANGE', KEYS[3], ARGV[2], '+', 'COUNT', tonumber(ARGV[3]))
local record = redis.call('HMGET', KEYS[2], 'id', 'cmd', 'state', 'exception', 'result_read')
return {'job', record, redis.call('XLEN', KEYS[3]), entries}
