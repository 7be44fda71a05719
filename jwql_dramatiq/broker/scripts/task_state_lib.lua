-- task_state_lib: the task-state write shared by task_state.lua and enqueue.lua (prepended to
-- both by the loader, jwql_dramatiq.lua.LuaScript's ``includes``; it runs nothing on its own).
--
-- write_task_state(task_key, index_key, record_key, a) records one change of a task's state,
-- never moving a task out of a final state, and never letting a late "queued" overwrite the run it
-- announced. Its keys:
--
--   task_key    <namespace>:task:<message_id>, the task's hash
--   index_key   <namespace>:tasks, the listing index (sorted set: message id -> last change, s)
--   record_key  optional (nil): a worker's record hash, updated whatever happens to the task's hash
--
-- and ``a``, a table laid out as task_state.lua's ARGV:
--
--   a[1]  the message id
--   a[2]  now, Unix time in seconds
--   a[3]  time to live of the task's hash, in milliseconds
--   a[4]  most entries kept in the listing index (trimmed when a task first appears, or in "force" mode)
--   a[5]  mode: "force" always writes (revoke and purge themselves);
--         "guard" writes unless the task is in a final state;
--         "enqueue" also skips when the task already runs (or ran) the same Redis message
--         (its redis_id), i.e. a worker overtook the sender's "queued"
--   a[6]  n, the number of task field/value pairs that follow
--   a[7 .. 6+2n]        the task's fields and values (the new "state" among them)
--   a[7+2n .. #a]       the worker record's fields and values (with record_key)
--
-- Returns 1 if the task's hash was written, 0 if the change was refused.
local task_state_final = {succeeded = true, failed = true, purged = true, revoked = true}

local function write_task_state(task_key, index_key, record_key, a)
    local n = tonumber(a[6])
    local mode = a[5]
    local written = 0
    local allowed = true
    local new_task = true  -- in "force" mode, unknown: trim anyway (revoke and purge are rare)
    if mode ~= "force" then
        local current = redis.call("hmget", task_key, "state", "redis_id")
        new_task = not current[1]
        if current[1] and task_state_final[current[1]] then
            allowed = false
        elseif mode == "enqueue" and current[1] == "running" and current[2] then
            for i = 7, 6 + 2 * n, 2 do
                if a[i] == "redis_id" and a[i + 1] == current[2] then
                    allowed = false
                end
            end
        end
    end

    if allowed then
        local values = {}
        for i = 7, 6 + 2 * n do
            values[#values + 1] = a[i]
        end
        values[#values + 1] = "updated_at"
        values[#values + 1] = a[2]
        redis.call("hset", task_key, unpack(values))
        redis.call("pexpire", task_key, a[3])
        redis.call("zadd", index_key, a[2], a[1])
        if new_task then  -- only a task's first write grows the index
            redis.call("zremrangebyrank", index_key, 0, -(tonumber(a[4]) + 1))
        end
        written = 1
    end

    if record_key and #a > 6 + 2 * n then
        local record = {}
        for i = 7 + 2 * n, #a do
            record[#record + 1] = a[i]
        end
        redis.call("hset", record_key, unpack(record))
    end
    return written
end
