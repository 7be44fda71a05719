-- task_state_lib: the task-state write shared by task_state.lua, enqueue.lua, finish.lua and purge.lua
-- (prepended to each by the loader, jwql_dramatiq.lua.LuaScript's ``includes``; it runs nothing on
-- its own).
--
-- store_task_state(task_key, index_key, message_id, values, now_s, ttl_ms, trim_to) writes one
-- state without any check: the hash's fields and values (the table ``values``, to which it adds
-- updated_at = now_s), its time to live (ttl_ms), the listing index entry (message id -> now_s),
-- and, if trim_to > 0, trims the index to its newest trim_to entries. enqueue.lua calls it
-- directly for a message's first send, which nothing can have recorded before.
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

local function store_task_state(task_key, index_key, message_id, values, now_s, ttl_ms, trim_to)
    values[#values + 1] = "updated_at"
    values[#values + 1] = now_s
    redis.call("hset", task_key, unpack(values))
    redis.call("pexpire", task_key, ttl_ms)
    redis.call("zadd", index_key, now_s, message_id)
    if tonumber(trim_to) > 0 then
        redis.call("zremrangebyrank", index_key, 0, -(tonumber(trim_to) + 1))
    end
end

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
        -- only a task's first write grows the index, so only it trims
        store_task_state(task_key, index_key, a[1], values, a[2], a[3], new_task and a[4] or 0)
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
