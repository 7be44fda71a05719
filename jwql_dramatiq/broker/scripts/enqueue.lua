-- enqueue: put one message on a queue and wake an idle consumer, in one round trip, and, for any
-- send but a message's first send to a ready queue, record the task's "queued" (or "scheduled")
-- state in the same script. A first send to a ready queue records nothing: its Redis id is its
-- message id, by which the waiting task is found (jwql_dramatiq.broker.waiting_messages). A later
-- enqueue of the same message (a retry, or a delayed message falling due) writes its state with
-- write_task_state, from task_state_lib.lua, which the loader prepends; a delayed first enqueue
-- writes it unchecked (that library's store_task_state), from a short argument list.
--
-- KEYS[1]  <ns>:Q, or <ns>:Q.P<p>  list of waiting Redis message ids of the actor's priority p (Q
--                                  may be a delay queue Q.DQ)
-- KEYS[2]  <ns>:Q.msgs             hash: Redis message id -> payload
-- KEYS[3]  <ns>:__wake__.Q         list an idle consumer of Q blocks on
-- KEYS[4]  <ns>:Q.levels           zset of the non-zero priorities in use (member "P<p>", score p)
-- KEYS[5]  optional: <ns>:task:<message_id>, the task's state hash (no state is written without it)
-- KEYS[6]  with KEYS[5]: <ns>:tasks, the listing index
-- KEYS[7]  optional, with ARGV[6] "guarded": a worker's record hash (a failed run sent again by Retries)
--
-- ARGV[1]  the Redis message id (a fresh UUID per enqueue)
-- ARGV[2]  the payload (the message as JSON)
-- ARGV[3]  now, ms, with its fraction (the wake-up token)
-- ARGV[4]  longest the wake-up list is kept: trimmed back to that once it is twice as long (one
--          LTRIM per ARGV[4] sends while no worker is idle, not one per send)
-- ARGV[5]  the priority p (0: KEYS[1] is <ns>:Q and KEYS[4] is not touched)
-- ARGV[6]  with KEYS[5]: how the state is written:
--          "new", a first enqueue: nothing can have recorded the task before this script, so the
--          hash is written without being read, from ARGV[7..15]:
--            ARGV[7]  the message id          ARGV[8]  time to live of the hash, ms
--            ARGV[9]  most entries kept in the listing index, or 0 not to trim it this time
--            ARGV[10] the state               ARGV[11] the actor     ARGV[12] the queue
--            ARGV[13] arguments               ARGV[14] input_file    ARGV[15] the eta
--          (ARGV[14] and ARGV[15] may be left out when empty, as a sender does: each argument
--          costs the client and the server; redis_id is ARGV[1]; enqueued_at and updated_at
--          are now, in s);
--          "guarded": ARGV[7..] are laid out as task_state.lua's ARGV (mode "enqueue")
--
-- Returns 1, or 0 if the id was already there (a send run again after a lost reply: nothing is
-- doubled; or the same message sent again, from another process, while its first send waits).
if redis.call("hsetnx", KEYS[2], ARGV[1], ARGV[2]) == 0 then
    return 0
end
redis.call("rpush", KEYS[1], ARGV[1])
if tonumber(ARGV[5]) ~= 0 then
    redis.call("zadd", KEYS[4], ARGV[5], "P" .. ARGV[5])
end
if redis.call("rpush", KEYS[3], ARGV[3]) > 2 * tonumber(ARGV[4]) then  -- nobody is waking up: keep it short
    redis.call("ltrim", KEYS[3], -tonumber(ARGV[4]), -1)
end
if not KEYS[5] then
    return 1
end
if ARGV[6] == "guarded" then
    write_task_state(KEYS[5], KEYS[6], KEYS[7], {unpack(ARGV, 7)})
    return 1
end
local now_s = string.format("%.6f", tonumber(ARGV[3]) / 1000)
local fields = {"state", ARGV[10], "actor", ARGV[11], "queue", ARGV[12], "redis_id", ARGV[1],
                "enqueued_at", now_s, "input_file", ARGV[14] or "", "arguments", ARGV[13]}
if ARGV[15] and ARGV[15] ~= "" then
    fields[#fields + 1] = "eta"
    fields[#fields + 1] = ARGV[15]
end
store_task_state(KEYS[5], KEYS[6], ARGV[7], fields, now_s, ARGV[8], ARGV[9])
return 1
