-- store_result: store a task's result unless the task was revoked (or purged) meanwhile.
--
-- KEYS[1]  the result key (a one-element list, as Dramatiq's Redis results backend keeps it)
-- KEYS[2]  <namespace>:revoked, a sorted set of revoked message ids scored by revocation time
-- ARGV[1]  the message id
-- ARGV[2]  the encoded result
-- ARGV[3]  time to live, in milliseconds
-- ARGV[4]  "1" to store even if the message is revoked (the revocation's own failure record)
--
-- Returns 1 if the result was stored, 0 if it was left alone because the message is revoked.
if ARGV[4] ~= "1" and redis.call("zscore", KEYS[2], ARGV[1]) then
    return 0
end
redis.call("del", KEYS[1])
redis.call("lpush", KEYS[1], ARGV[2])
redis.call("pexpire", KEYS[1], ARGV[3])
return 1
