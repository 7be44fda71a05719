-- leave.lua: a waiter gives up; take it out of the queue and pass any wake-up on to the next waiter.
--
-- KEYS[1]  the lock key              string: the holder's token
-- KEYS[2]  <ns>:lock-queue:<name>    zset: waiter id -> arrival time (server microseconds)
-- KEYS[3]  <ns>:lock-waiters:<name>  zset: waiter id -> deadline (server milliseconds)
--
-- ARGV[1]  waiter_id      the leaving waiter's id (hex)
-- ARGV[2]  signal_prefix  '<ns>:lock-signal:<name>:'
-- ARGV[3]  signal_ttl_ms  how long an unconsumed wake-up is kept
--
-- Returns
--   1  LEFT       the waiter is out of the queue
--   2  LEFT_WOKE  the waiter is out of the queue, and as the lock is free the new first waiter was signalled
-- There is no failure code; any other code raises LockError.

local signal_prefix = ARGV[2]
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('DEL', signal_prefix .. ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
    local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
    if head then
        redis.call('LPUSH', signal_prefix .. head, '1')
        redis.call('PEXPIRE', signal_prefix .. head, ARGV[3])
        return 2
    end
end
return 1
