-- task_state: record one change of a task's state in one round trip, never moving a task out of a
-- final state, and never letting a late "queued" overwrite the run it announced.
--
-- KEYS[1]  <namespace>:task:<message_id>, the task's hash
-- KEYS[2]  <namespace>:tasks, the listing index (sorted set: message id -> last change, s)
-- KEYS[3]  optional: a worker's record hash, updated whatever happens to the task's hash
-- ARGV[1]  the message id
-- ARGV[2]  now, Unix time in seconds
-- ARGV[3]  time to live of the task's hash, in milliseconds
-- ARGV[4]  most entries kept in the listing index
-- ARGV[5]  mode: "force" always writes (revoke and purge themselves);
--          "guard" writes unless the task is in a final state;
--          "enqueue" also skips when the task already runs (or ran) the same Redis message
--          (its redis_id), i.e. a worker overtook the sender's "queued"
-- ARGV[6]  n, the number of task field/value pairs that follow
-- ARGV[7 .. 6+2n]            the task's fields and values (the new "state" among them)
-- ARGV[7+2n .. #ARGV]        the worker record's fields and values (with KEYS[3])
--
-- Returns 1 if the task's hash was written, 0 if the change was refused.
local final = {succeeded = true, failed = true, purged = true, revoked = true}
local n = tonumber(ARGV[6])
local written = 0

local function field(name)
    for i = 7, 6 + 2 * n, 2 do
        if ARGV[i] == name then
            return ARGV[i + 1]
        end
    end
    return nil
end

local allowed = true
if ARGV[5] ~= "force" then
    local current = redis.call("hmget", KEYS[1], "state", "redis_id")
    if current[1] and final[current[1]] then
        allowed = false
    elseif ARGV[5] == "enqueue" and current[1] == "running" and current[2] and current[2] == field("redis_id") then
        allowed = false
    end
end

if allowed then
    local values = {}
    for i = 7, 6 + 2 * n do
        values[#values + 1] = ARGV[i]
    end
    values[#values + 1] = "updated_at"
    values[#values + 1] = ARGV[2]
    redis.call("hset", KEYS[1], unpack(values))
    redis.call("pexpire", KEYS[1], ARGV[3])
    redis.call("zadd", KEYS[2], ARGV[2], ARGV[1])
    redis.call("zremrangebyrank", KEYS[2], 0, -(tonumber(ARGV[4]) + 1))
    written = 1
end

if KEYS[3] and #ARGV > 6 + 2 * n then
    local record = {}
    for i = 7 + 2 * n, #ARGV do
        record[#record + 1] = ARGV[i]
    end
    redis.call("hset", KEYS[3], unpack(record))
end
return written
