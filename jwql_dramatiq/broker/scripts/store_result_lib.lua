-- store_result_lib: the body of store_result.lua as a function, store_result(keys, argv), with
-- keys and argv laid out as that script's KEYS and ARGV (see its header). Prepended by the loader
-- to store_result.lua, finish.lua and purge.lua; it runs nothing on its own.
local function store_result(keys, argv)
    if argv[4] ~= "1" then
        if redis.call("zscore", keys[2], argv[1]) then
            return 0
        end
        if argv[5] == "1" then
            local existing = redis.call("lindex", keys[1], 0)
            if existing and not string.find(existing, "dramatiq.results.Result", 1, true) then
                return 2
            end
        end
    end
    redis.call("del", keys[1])
    redis.call("lpush", keys[1], argv[2])
    redis.call("pexpire", keys[1], argv[3])
    return 1
end
