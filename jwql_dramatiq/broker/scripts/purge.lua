-- purge: fail one chunk of taken messages as purged, in one round trip: for each message not
-- already revoked, store its TaskPurged failure (which wakes its waiter) and record its "purged"
-- state; drop the payloads of the ids taken off the queue, and mark the others (delayed messages
-- a worker holds in memory) revoked, so that they never run.
--
-- KEYS[1]  <ns>:revoked            zset: revoked message id -> when, s (never run, never overwritten)
-- KEYS[2]  <ns>:tasks              the task-state listing index (message id -> last change, s)
-- KEYS[3]  <ns>:Q.msgs             hash: Redis message id -> payload
--
-- ARGV[1]  now, Unix time in seconds
-- ARGV[2]  time to live of the results and task states, ms
-- ARGV[3]  most entries kept in the listing index
-- ARGV[4]  the task-state key prefix, "<ns>:task:" (a task's hash is that plus its message id)
-- ARGV[5]  the queue's name, for the states
-- ARGV[6]  the chunk, a JSON array with one array of seven strings per message:
--          the Redis message id; "1" to drop its payload (taken off the queue), "0" to keep it (a
--          delayed message a worker holds in memory: that worker settles it); the message id ("" for
--          an undecodable payload: dropped, nobody to tell); its result key; its encoded TaskPurged
--          failure; its actor; the failure's text. (One JSON argument rather than seven per message:
--          the client encodes one string instead of 14,000 arguments per chunk.)
--
-- Returns the message ids failed here (those already revoked had their waiter told then).
-- The result and the state are written as everywhere else: store_result (store_result_lib.lua)
-- and store_task_state (task_state_lib.lua), which the loader prepends.
local now, ttl_ms = ARGV[1], ARGV[2]
local failed = {}
for _, m in ipairs(cjson.decode(ARGV[6])) do
    local redis_id, drop, message_id = m[1], m[2], m[3]
    if drop == "1" then
        redis.call("hdel", KEYS[3], redis_id)
    end
    if message_id ~= "" and not redis.call("zscore", KEYS[1], message_id) then
        local result_key, text = m[4], m[7]
        if drop ~= "1" then  -- a delayed message a worker holds: it must skip it when due
            redis.call("zadd", KEYS[1], now, message_id)
        end  -- (a message taken off its queue, payload dropped, can never run: no mark needed)
        store_result({result_key, KEYS[1]}, {message_id, m[5], ttl_ms, "1", "1"})  -- "1": checked above
        store_task_state(ARGV[4] .. message_id, KEYS[2], message_id,
                         {"state", "purged", "purged_at", now, "actor", m[6], "queue", ARGV[5],
                          "error", "TaskPurged: " .. text}, now, ttl_ms, 0)  -- trimmed once, below
        failed[#failed + 1] = message_id
    end
end
redis.call("zremrangebyrank", KEYS[2], 0, -(tonumber(ARGV[3]) + 1))
return failed
