-- purge_take: take every waiting id of a queue for a purge, in one atomic step, losing none.
--
-- Each waiting list of the queue (<ns>:Q, and <ns>:Q.P<p> for each priority in <ns>:Q.levels,
-- read here so that a list added meanwhile is not missed) is renamed to a holding list of this
-- purge: KEYS[3], and KEYS[3] .. ".P<p>" for a priority list (named as fetch.lua names the
-- priority lists). Each holding list is recorded in the purge registry, KEYS[4], with the queue's
-- name, and <ns>:Q.levels is deleted. The purge then fails the held ids chunk by chunk with
-- purge.lua, which pops each chunk off the head of its holding list in the same script, and
-- drops the list from the registry once it is empty: an interrupted purge leaves exactly the ids
-- it has not failed, held and registered, for the next purge to finish (jwql_dramatiq.broker.admin).
--
-- KEYS[1]  <ns>:Q                          list of waiting Redis message ids (priority 0)
-- KEYS[2]  <ns>:Q.levels                   zset of the non-zero priorities in use (member "P<p>", score p)
-- KEYS[3]  <ns>:__purging__.Q.<purge id>   this purge's holding list for KEYS[1] (a fresh name)
-- KEYS[4]  <ns>:__purging__                hash: holding list -> the queue's name
--
-- ARGV[1]  the queue's name (Q, or Q.DQ for a delay queue), recorded in KEYS[4]
--
-- Returns {holding_1, ids_1, holding_2, ids_2, ...}: each non-empty list's holding list and the
-- ids it holds (oldest first), <ns>:Q first, then the priority lists in order of p.
local lists = {{KEYS[1], KEYS[3]}}
for _, level in ipairs(redis.call("zrange", KEYS[2], 0, -1)) do
    lists[#lists + 1] = {KEYS[1] .. "." .. level, KEYS[3] .. "." .. level}
end
local taken = {}
for _, list in ipairs(lists) do
    if redis.call("exists", list[1]) == 1 then
        redis.call("rename", list[1], list[2])
        redis.call("hset", KEYS[4], list[2], ARGV[1])
        taken[#taken + 1] = list[2]
        taken[#taken + 1] = redis.call("lrange", list[2], 0, -1)
    end
end
redis.call("del", KEYS[2])
return taken
