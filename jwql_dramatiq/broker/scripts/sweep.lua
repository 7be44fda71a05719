-- sweep: requeue the unacked messages of dead workers on every known queue, then forget those workers.
--
-- The maintenance pass of Dramatiq's dispatch.lua, made deterministic: dispatch.lua runs it with
-- probability maintenance_chance/1e6 per command and only for that command's queue; the sweeper
-- thread of every worker runs this script every sweep_interval_s for every declared queue and its
-- delay queue. The ack-set keys are built from the heartbeat set and the queue names given here,
-- so no KEYS or SCAN is needed.
--
-- KEYS[1]  <ns>:__heartbeats__     zset: worker (broker) id -> last heartbeat, ms
--
-- ARGV[1]  namespace               the key prefix <ns>
-- ARGV[2]  now_ms                  the sweeper's clock, ms (Dramatiq's heartbeats use the workers' clocks)
-- ARGV[3]  heartbeat_timeout_ms    a worker whose heartbeat is older than this is dead
-- ARGV[4]  dead_message_ttl_ms     dead-lettered messages older than this are dropped, as dispatch.lua does
-- ARGV[5]  self_id                 the calling worker's id, never swept (its own heartbeat may be stale
--                                  for a moment after it reconnects)
-- ARGV[6]  wake_max                longest a wake-up list may grow
-- ARGV[7..] queue names            every declared queue and its ".DQ" delay queue
--
-- Per dead worker W and queue Q it reads <ns>:__acks__.W.Q (fetched but unacked ids), RPUSHes each
-- id whose payload is still in <ns>:Q.msgs back onto <ns>:Q (the tail, as dispatch.lua does),
-- deletes the ack set, and RPUSHes a token on <ns>:__wake__.Q so an idle consumer fetches at once.
-- Then W is removed from the heartbeat set. DLQ entries (<ns>:Q.XQ, <ns>:Q.XQ.msgs) older than
-- dead_message_ttl_ms are dropped.
--
-- Returns {requeued, dead_worker_1, ids_requeued_1, dead_worker_2, ids_requeued_2, ...}.

local heartbeats = KEYS[1]
local namespace = ARGV[1]
local now_ms = tonumber(ARGV[2])
local heartbeat_timeout_ms = tonumber(ARGV[3])
local dead_message_ttl_ms = tonumber(ARGV[4])
local self_id = ARGV[5]
local wake_max = tonumber(ARGV[6])

local queues = {}
for i = 7, #ARGV do
    queues[#queues + 1] = ARGV[i]
end

local total = 0
local report = {}
local woken = {}
local dead_workers = redis.call("zrangebyscore", heartbeats, 0, now_ms - heartbeat_timeout_ms)
for _, worker in ipairs(dead_workers) do
    if worker ~= self_id then
        local requeued = 0
        for _, queue in ipairs(queues) do
            local acks = namespace .. ":__acks__." .. worker .. "." .. queue
            local queue_key = namespace .. ":" .. queue
            local messages = queue_key .. ".msgs"
            local ids = redis.call("smembers", acks)
            for _, id in ipairs(ids) do
                if redis.call("hexists", messages, id) == 1 then
                    redis.call("rpush", queue_key, id)
                    requeued = requeued + 1
                    woken[queue] = true
                end
            end
            if #ids > 0 then
                redis.call("del", acks)
            end
        end
        redis.call("zrem", heartbeats, worker)
        total = total + requeued
        report[#report + 1] = worker
        report[#report + 1] = requeued
    end
end

for queue, _ in pairs(woken) do
    local wake = namespace .. ":__wake__." .. queue
    redis.call("rpush", wake, now_ms)
    redis.call("ltrim", wake, -wake_max, -1)
end

-- Dead letters expire as in dispatch.lua, in chunks well below Lua's unpack limit.
for _, queue in ipairs(queues) do
    if string.sub(queue, -3) ~= ".DQ" then
        local xq = namespace .. ":" .. queue .. ".XQ"
        local expired = redis.call("zrangebyscore", xq, 0, now_ms - dead_message_ttl_ms)
        local i = 1
        while i <= #expired do
            local chunk = {}
            for j = i, math.min(i + 499, #expired) do
                chunk[#chunk + 1] = expired[j]
            end
            redis.call("zrem", xq, unpack(chunk))
            redis.call("hdel", xq .. ".msgs", unpack(chunk))
            i = i + 500
        end
    end
end

local reply = {total}
for _, item in ipairs(report) do
    reply[#reply + 1] = item
end
return reply
