-- purge: fail one chunk of taken messages as purged, in one round trip: for each message not
-- already revoked, store its TaskPurged failure (which wakes its waiter) and record its "purged"
-- state; drop the payloads of the ids taken off the queue, and mark the others (delayed messages
-- a worker holds in memory) revoked, so that they never run.
--
-- Ids taken off the queue wait in a holding list of the purge (purge_take.lua). With KEYS[4], the
-- chunk is the first ARGV[8] ids of that list: this script pops them off its head, with the
-- effects above, so that progress and effects are one atomic step and an interrupted purge leaves
-- exactly the ids not yet failed. It first checks that the list still has the length the caller
-- saw (ARGV[7]): a holding list only ever loses ids from its head, so any other length means
-- another purge (finishing an interrupted one) has already done this chunk, and nothing is done
-- here. An emptied holding list is gone (Redis deletes an empty list) and is dropped from KEYS[5].
--
-- KEYS[1]  <ns>:revoked            zset: revoked message id -> when, s (never run, never overwritten)
-- KEYS[2]  <ns>:tasks              the task-state listing index (message id -> last change, s)
-- KEYS[3]  <ns>:Q.msgs             hash: Redis message id -> payload
-- KEYS[4]  optional: <ns>:__purging__.Q.<purge id>[.P<p>], the holding list the chunk heads
-- KEYS[5]  with KEYS[4]: <ns>:__purging__, hash: holding list -> queue name (the purge registry)
--
-- ARGV[1]  now, Unix time in seconds
-- ARGV[2]  time to live of the results and task states, ms
-- ARGV[3]  most entries kept in the listing index
-- ARGV[4]  the task-state key prefix, "<ns>:task:" (a task's hash is that plus its message id)
-- ARGV[5]  the queue's name, for the states
-- ARGV[6]  the chunk, a JSON array with one array of nine strings per message:
--          the Redis message id; "1" to drop its payload (taken off the queue), "0" to keep it (a
--          delayed message a worker holds in memory: that worker settles it); the message id ("" for
--          an undecodable payload: dropped, nobody to tell); its result key; its encoded TaskPurged
--          failure; its actor; the failure's text; its input file (first string argument) and its
--          enqueue time, s, for a first send, which has no record to keep them ("" otherwise, and
--          left out). (One JSON argument rather
--          than nine per message: the client encodes one string instead of 18,000 arguments per
--          chunk.) An id of the
--          holding list whose payload is gone (settled or purged meanwhile) has no row.
-- ARGV[7]  with KEYS[4]: the length of the holding list before this chunk
-- ARGV[8]  with KEYS[4]: how many ids the chunk takes off the head of the holding list
--
-- Returns the message ids failed here (those already revoked had their waiter told then), or
-- nil (no effect) if the holding list is not ARGV[7] long.
-- The result and the state are written as everywhere else: store_result (store_result_lib.lua)
-- and store_task_state (task_state_lib.lua), which the loader prepends.
local now, ttl_ms = ARGV[1], ARGV[2]
local holding = KEYS[4]
if holding and redis.call("llen", holding) ~= tonumber(ARGV[7]) then
    return false  -- another purge did this chunk
end
local failed = {}
for _, m in ipairs(cjson.decode(ARGV[6])) do
    local redis_id, drop, message_id = m[1], m[2], m[3]
    -- The payload is dropped (or the id marked revoked) last: should a write fail half-way (the
    -- script stops there, its earlier writes kept), the message is still there to purge again.
    if message_id ~= "" and not redis.call("zscore", KEYS[1], message_id) then
        local result_key, text = m[4], m[7]
        store_result({result_key, KEYS[1]}, {message_id, m[5], ttl_ms, "1", "1"})  -- "1": checked above
        local fields = {"state", "purged", "purged_at", now, "actor", m[6], "queue", ARGV[5],
                        "error", "TaskPurged: " .. text}
        for i, name in ipairs({"input_file", "enqueued_at"}) do
            if m[7 + i] ~= "" then
                fields[#fields + 1] = name
                fields[#fields + 1] = m[7 + i]
            end
        end
        store_task_state(ARGV[4] .. message_id, KEYS[2], message_id, fields, now, ttl_ms, 0)  -- trimmed once, below
        if drop ~= "1" then  -- a delayed message a worker holds: it must skip it when due
            redis.call("zadd", KEYS[1], now, message_id)
        end  -- (a message taken off its queue, payload dropped, can never run: no mark needed)
        failed[#failed + 1] = message_id
    end
    if drop == "1" then
        redis.call("hdel", KEYS[3], redis_id)
    end
end
redis.call("zremrangebyrank", KEYS[2], 0, -(tonumber(ARGV[3]) + 1))
if holding then
    redis.call("ltrim", holding, ARGV[8], -1)
    if redis.call("exists", holding) == 0 then
        redis.call("hdel", KEYS[5], holding)
    end
end
return failed
