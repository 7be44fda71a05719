-- settle: end a worker's hold on messages it fetched: ack, nack (dead-letter) or requeue.
--
-- Only ids the worker still holds are settled, so a message the sweeper already gave to another
-- worker (this one was presumed dead) is not acked or dead-lettered twice.
--
-- KEYS[1]  <ns>:__acks__.W.Q       set: ids worker W holds from Q
-- KEYS[2]  <ns>:Q                  list of waiting Redis message ids
-- KEYS[3]  <ns>:Q.msgs             hash: Redis message id -> payload
-- KEYS[4]  <ns>:Q.XQ               zset: dead-lettered id -> when, ms (Q canonical)
-- KEYS[5]  <ns>:Q.XQ.msgs          hash: dead-lettered id -> payload
-- KEYS[6]  <ns>:__wake__.Q         list an idle consumer of Q blocks on
--
-- ARGV[1]  "ack" (drop the payload), "nack" (move it to the dead letters) or "requeue" (put the id
--          back at the tail of Q and wake a consumer)
-- ARGV[2]  now, ms
-- ARGV[3]  longest the wake-up list may grow
-- ARGV[4..] the Redis message ids
--
-- Returns the number of ids settled.
local mode = ARGV[1]
local settled = 0
for i = 4, #ARGV do
    local id = ARGV[i]
    if redis.call("srem", KEYS[1], id) > 0 then
        settled = settled + 1
        if mode == "ack" then
            redis.call("hdel", KEYS[3], id)
        elseif mode == "nack" then
            local payload = redis.call("hget", KEYS[3], id)
            if payload then
                redis.call("zadd", KEYS[4], ARGV[2], id)
                redis.call("hset", KEYS[5], id, payload)
                redis.call("hdel", KEYS[3], id)
            end
        elseif redis.call("hexists", KEYS[3], id) > 0 then
            redis.call("rpush", KEYS[2], id)
        end
    end
end
if mode == "requeue" and settled > 0 then
    redis.call("rpush", KEYS[6], ARGV[2])
    redis.call("ltrim", KEYS[6], -tonumber(ARGV[3]), -1)
end
return settled
