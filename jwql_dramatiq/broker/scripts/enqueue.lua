-- enqueue: put one message on a queue and wake an idle consumer, in one round trip.
--
-- KEYS[1]  <ns>:Q, or <ns>:Q.P<p>  list of waiting Redis message ids of the actor's priority p (Q
--                                  may be a delay queue Q.DQ)
-- KEYS[2]  <ns>:Q.msgs             hash: Redis message id -> payload
-- KEYS[3]  <ns>:__wake__.Q         list an idle consumer of Q blocks on
-- KEYS[4]  <ns>:Q.levels           zset of the non-zero priorities in use (member "P<p>", score p)
--
-- ARGV[1]  the Redis message id (a fresh UUID per enqueue)
-- ARGV[2]  the payload (the message as JSON)
-- ARGV[3]  now, ms (the wake-up token)
-- ARGV[4]  longest the wake-up list may grow
-- ARGV[5]  the priority p (0: KEYS[1] is <ns>:Q and KEYS[4] is not touched)
--
-- Returns 1, or 0 if the id was already there (a pipeline run again after NOSCRIPT: nothing is doubled).
if redis.call("hsetnx", KEYS[2], ARGV[1], ARGV[2]) == 0 then
    return 0
end
redis.call("rpush", KEYS[1], ARGV[1])
if tonumber(ARGV[5]) ~= 0 then
    redis.call("zadd", KEYS[4], ARGV[5], "P" .. ARGV[5])
end
redis.call("rpush", KEYS[3], ARGV[3])
redis.call("ltrim", KEYS[3], -tonumber(ARGV[4]), -1)
return 1
