-- job_record_progress: record the running job's structured progress, fenced.
--
-- KEYS[1] lock        (hash; field fencing_token)
-- KEYS[2] job:{id}    (hash; the progress_* fields)
-- ARGV[1] the caller's fencing token
-- ARGV[2] positions done (of the snapshot, earlier runs included)
-- ARGV[3] positions total (the snapshot's positions)
-- ARGV[4] events done (source events, earlier runs included)
-- ARGV[5] events total (the snapshot's events)
-- ARGV[6] positions migrated by this run
-- ARGV[7] events migrated by this run
--
-- Returns 1, or 0 when the token is not the lock's (nothing written).
--
-- Guarantees: only the lock holder writes progress, so a fenced-out worker
-- never moves the numbers back; every field changes together (readers see
-- one consistent update); `progress_started_at` is set by the first call of
-- a run (ARGV[6] = 0, or a new fencing token: a first run, a takeover, a
-- hand-over, an engine run again after a Redis outage), and
-- the rates are this run's, by Redis's clock, so every reader on every
-- replica computes nothing and sees the same figures.

if redis.call('HGET', KEYS[1], 'fencing_token') ~= ARGV[1] then
  return 0
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local started = tonumber(redis.call('HGET', KEYS[2], 'progress_started_at') or '')
-- A run reports 0 done when its migrate loop starts (also when the same
-- worker runs the engine again on its lease after a Redis outage).
if ARGV[6] == '0' or redis.call('HGET', KEYS[2], 'progress_fencing_token') ~= ARGV[1] or not started then
  started = now
end
local seconds = (now - started) / 1000
local positions_rate, events_rate = 0, 0
if seconds > 0 then
  positions_rate = tonumber(ARGV[6]) / seconds
  events_rate = tonumber(ARGV[7]) / seconds
end
redis.call('HSET', KEYS[2],
  'progress_positions_done', ARGV[2],
  'progress_positions_total', ARGV[3],
  'progress_events_done', ARGV[4],
  'progress_events_total', ARGV[5],
  'progress_started_at', string.format('%d', started),
  'progress_updated_at', string.format('%d', now),
  'progress_positions_per_second', string.format('%.1f', positions_rate),
  'progress_events_per_second', string.format('%.1f', events_rate),
  'progress_fencing_token', ARGV[1])
return 1
