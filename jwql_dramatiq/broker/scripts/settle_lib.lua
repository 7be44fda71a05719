-- settle_lib: the body of settle.lua as a function, settle(keys, argv), with keys and argv laid
-- out as that script's KEYS and ARGV (see its header). Prepended by the loader to settle.lua and
-- finish.lua; it runs nothing on its own.
local function settle(keys, argv)
    local mode = argv[1]
    local settled = 0
    for i = 4, #argv do
        local id = argv[i]
        if redis.call("srem", keys[1], id) > 0 then
            settled = settled + 1
            if mode == "ack" then
                redis.call("hdel", keys[3], id)
            elseif mode == "nack" then
                local payload = redis.call("hget", keys[3], id)
                if payload then
                    redis.call("zadd", keys[4], argv[2], id)
                    redis.call("hset", keys[5], id, payload)
                    redis.call("hdel", keys[3], id)
                end
            elseif redis.call("hexists", keys[3], id) > 0 then
                redis.call("rpush", keys[2], id)
            end
        end
    end
    if mode == "requeue" and settled > 0 then
        redis.call("rpush", keys[6], argv[2])
        redis.call("ltrim", keys[6], -tonumber(argv[3]), -1)
    end
    return settled
end
