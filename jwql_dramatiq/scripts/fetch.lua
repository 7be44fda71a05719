-- fetch: record the worker's heartbeat and take up to n messages from the head of a queue.
--
-- The ids taken are held in the worker's set; they stay there, on the lease of the worker's
-- heartbeat, until the worker settles them (settle.lua) or the sweeper finds the worker dead
-- (sweep.lua) and puts them back. n = 0 only records the heartbeat.
--
-- KEYS[1]  <ns>:__heartbeats__     zset: worker id -> last heartbeat, ms
-- KEYS[2]  <ns>:Q                  list of waiting Redis message ids
-- KEYS[3]  <ns>:Q.msgs             hash: Redis message id -> payload
-- KEYS[4]  <ns>:__acks__.W.Q       set: ids worker W holds from Q
--
-- ARGV[1]  now, ms
-- ARGV[2]  the worker id W
-- ARGV[3]  n, most messages to take
--
-- Returns {id_1, payload_1, id_2, payload_2, ...}; an id whose payload is gone (purged or revoked
-- meanwhile) is dropped from the held set and left out.
redis.call("zadd", KEYS[1], ARGV[1], ARGV[2])
local taken = {}
for _ = 1, tonumber(ARGV[3]) do
    local id = redis.call("lpop", KEYS[2])
    if not id then
        break
    end
    local payload = redis.call("hget", KEYS[3], id)
    if payload then
        redis.call("sadd", KEYS[4], id)
        taken[#taken + 1] = id
        taken[#taken + 1] = payload
    end
end
return taken
