-- datastore_writer_token_release.lua: give back the exclusive writer token
-- after a write that did not commit (a commit removes it itself).
--
-- KEYS[1] ds:writer_token
-- ARGV[1] the owner token of the caller
--
-- Returns 1 when released, 0 when the token is not (or no longer) the
-- caller's: then nothing is changed, so a token taken by another writer
-- after ours expired is never removed.

if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('UNLINK', KEYS[1])
  return 1
end
return 0
