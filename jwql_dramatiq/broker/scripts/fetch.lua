-- fetch: record the worker's heartbeat and take up to n messages from the head of a queue.
--
-- The ids taken are held in the worker's set; they stay there, on the lease of the worker's
-- heartbeat, until the worker settles them (settle.lua) or the sweeper finds the worker dead
-- (sweep.lua) and puts them back. n = 0 only records the heartbeat.
--
-- Messages are taken highest priority first (lowest number, as in Dramatiq): the lists
-- <ns>:Q.P<p> of the priorities in KEYS[5], and <ns>:Q for priority 0, in order of p.
--
-- KEYS[1]  <ns>:__heartbeats__     zset: worker id -> last heartbeat, ms
-- KEYS[2]  <ns>:Q                  list of waiting Redis message ids (priority 0)
-- KEYS[3]  <ns>:Q.msgs             hash: Redis message id -> payload
-- KEYS[4]  <ns>:__acks__.W.Q       set: ids worker W holds from Q
-- KEYS[5]  <ns>:Q.levels           zset of the non-zero priorities in use (member "P<p>", score p)
--
-- ARGV[1]  now, ms
-- ARGV[2]  the worker id W
-- ARGV[3]  n, most messages to take
--
-- Returns {id_1, payload_1, id_2, payload_2, ...}; an id whose payload is gone (purged or revoked
-- meanwhile) is dropped from the held set and left out.
-- Every fetch records the heartbeat, in the same script as the SADD below: a worker that holds
-- messages is always in the heartbeat set, even just after the sweeper forgot it (it was silent
-- too long), so its messages can never be orphaned.
redis.call("zadd", KEYS[1], ARGV[1], ARGV[2])
local wanted = tonumber(ARGV[3])
local taken = {}
if wanted == 0 then
    return taken
end

-- The lists to take from, in priority order (usually just <ns>:Q).
local lists = {}
local levels = redis.call("zrange", KEYS[5], 0, -1, "withscores")
local main_added = false
for i = 1, #levels, 2 do
    if not main_added and tonumber(levels[i + 1]) > 0 then
        lists[#lists + 1] = {KEYS[2], nil}
        main_added = true
    end
    lists[#lists + 1] = {KEYS[2] .. "." .. levels[i], levels[i]}
end
if not main_added then
    lists[#lists + 1] = {KEYS[2], nil}
end

for _, list in ipairs(lists) do
    while #taken < 2 * wanted do
        local id = redis.call("lpop", list[1])
        if not id then
            if list[2] then
                redis.call("zrem", KEYS[5], list[2])  -- that priority has nothing waiting any more
            end
            break
        end
        local payload = redis.call("hget", KEYS[3], id)
        if payload then
            redis.call("sadd", KEYS[4], id)
            taken[#taken + 1] = id
            taken[#taken + 1] = payload
        end
    end
end
return taken
