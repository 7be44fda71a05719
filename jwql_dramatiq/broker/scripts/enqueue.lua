-- enqueue: put one message on a queue, wake an idle consumer and record the task's "queued" (or
-- "scheduled") state, in one round trip. The state write is write_task_state, from
-- task_state_lib.lua, which the loader prepends.
--
-- KEYS[1]  <ns>:Q, or <ns>:Q.P<p>  list of waiting Redis message ids of the actor's priority p (Q
--                                  may be a delay queue Q.DQ)
-- KEYS[2]  <ns>:Q.msgs             hash: Redis message id -> payload
-- KEYS[3]  <ns>:__wake__.Q         list an idle consumer of Q blocks on
-- KEYS[4]  <ns>:Q.levels           zset of the non-zero priorities in use (member "P<p>", score p)
-- KEYS[5]  optional: <ns>:task:<message_id>, the task's state hash (no state is written without it)
-- KEYS[6]  with KEYS[5]: <ns>:tasks, the listing index
-- KEYS[7]  optional: a worker's record hash (a failed run sent again by Retries)
--
-- ARGV[1]  the Redis message id (a fresh UUID per enqueue)
-- ARGV[2]  the payload (the message as JSON)
-- ARGV[3]  now, ms (the wake-up token)
-- ARGV[4]  longest the wake-up list may grow
-- ARGV[5]  the priority p (0: KEYS[1] is <ns>:Q and KEYS[4] is not touched)
-- ARGV[6..] with KEYS[5]: the state write, laid out as task_state.lua's ARGV
--
-- Returns 1, or 0 if the id was already there (a send run again after NOSCRIPT: nothing is doubled).
if redis.call("hsetnx", KEYS[2], ARGV[1], ARGV[2]) == 0 then
    return 0
end
redis.call("rpush", KEYS[1], ARGV[1])
if tonumber(ARGV[5]) ~= 0 then
    redis.call("zadd", KEYS[4], ARGV[5], "P" .. ARGV[5])
end
if redis.call("rpush", KEYS[3], ARGV[3]) > tonumber(ARGV[4]) then  -- nobody is waking up: keep it short
    redis.call("ltrim", KEYS[3], -tonumber(ARGV[4]), -1)
end
if KEYS[5] then
    write_task_state(KEYS[5], KEYS[6], KEYS[7], {unpack(ARGV, 6)})
end
return 1
