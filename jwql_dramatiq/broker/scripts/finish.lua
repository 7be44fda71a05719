-- finish: a worker's finish in one script: the writes deferred to a message's ack (its final
-- state, task_state.lua; its result, store_result.lua) and the ack or nack itself (settle.lua),
-- run in order, each as its own script would run it (the loader prepends task_state_lib.lua,
-- store_result_lib.lua and settle_lib.lua). One script instead of three in a pipeline: Redis
-- runs one EVALSHA, not three. Every part is safe to run again, so the whole is.
--
-- KEYS     every part's KEYS, one part after the other (as counted in ARGV)
-- ARGV[1]  the number of parts, n
-- ARGV[2..] for each part, in order: its name ("task_state", "store_result" or "settle"), the
--          number of its KEYS, the number of its ARGV, then its ARGV
--
-- Returns each part's own reply, in order.
local parts = {task_state = function(k, a) return write_task_state(k[1], k[2], k[3], a) end,
               store_result = store_result, settle = settle}
local replies = {}
local next_key, at = 1, 2
for _ = 1, tonumber(ARGV[1]) do
    local part = parts[ARGV[at]]
    if not part then
        return redis.error_reply("finish.lua: unknown part " .. tostring(ARGV[at]))
    end
    local key_count, arg_count = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
    local part_keys, part_args = {}, {}
    for i = 1, key_count do
        part_keys[i] = KEYS[next_key + i - 1]
    end
    for i = 1, arg_count do
        part_args[i] = ARGV[at + 2 + i]
    end
    replies[#replies + 1] = part(part_keys, part_args)
    next_key, at = next_key + key_count, at + 3 + arg_count
end
return replies
