-- store_result: store a task's result unless the task was revoked (or purged) meanwhile, and
-- never let a failure replace a success (a late failure of a duplicate run, e.g. from a worker
-- that was cut off while another completed the message, must not undo the success).
--
-- KEYS[1]  the result key (a one-element list, as Dramatiq's Redis results backend keeps it)
-- KEYS[2]  <namespace>:revoked, a sorted set of revoked message ids scored by revocation time
-- ARGV[1]  the message id
-- ARGV[2]  the encoded result
-- ARGV[3]  time to live, in milliseconds
-- ARGV[4]  "1" to store unconditionally (the revocation's or purge's own failure record)
-- ARGV[5]  "1" if the result is a failure record, "0" if it is a task's return value
--
-- Returns 1 if the result was stored, 0 if the message is revoked, 2 if a stored success was kept.
if ARGV[4] ~= "1" then
    if redis.call("zscore", KEYS[2], ARGV[1]) then
        return 0
    end
    if ARGV[5] == "1" then
        local existing = redis.call("lindex", KEYS[1], 0)
        if existing and not string.find(existing, "dramatiq.results.Result", 1, true) then
            return 2
        end
    end
end
redis.call("del", KEYS[1])
redis.call("lpush", KEYS[1], ARGV[2])
redis.call("pexpire", KEYS[1], ARGV[3])
return 1
