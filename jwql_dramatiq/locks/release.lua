-- release.lua: token-checked compare-and-delete of a lock and its owner record, then wake the first live
-- waiter. Also used by clear_lock / clear_stale_locks with the token read from the owner record.
--
-- KEYS[1]  the lock key              string: the holder's token
-- KEYS[2]  <ns>:lock-owner:<name>    string: the owner record
-- KEYS[3]  <ns>:lock-queue:<name>    zset: waiter id -> arrival time (server microseconds)
-- KEYS[4]  <ns>:lock-waiters:<name>  zset: waiter id -> deadline (server milliseconds)
--
-- ARGV[1]  token          the token the caller believes holds the lock
-- ARGV[2]  signal_prefix  '<ns>:lock-signal:<name>:'; the head waiter's wake-up list is signal_prefix .. head
-- ARGV[3]  signal_ttl_ms  how long an unconsumed wake-up is kept
--
-- Returns
--   1  RELEASED        the lock was ours and is deleted; nobody was waiting
--   2  RELEASED_WOKE   the lock was ours and is deleted; the first live waiter was signalled
--   0  NOT_OWNED       the lock is gone or holds another token; nothing was deleted
-- Python maps NOT_OWNED to LockNotOwned; any other code raises LockError.

if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
if redis.call('EXISTS', KEYS[3]) == 0 then
    return 1
end

local signal_prefix = ARGV[2]
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now_ms)
for i = 1, #dead do
    redis.call('ZREM', KEYS[3], dead[i])
    redis.call('ZREM', KEYS[4], dead[i])
    redis.call('DEL', signal_prefix .. dead[i])
end

local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
if head then
    redis.call('LPUSH', signal_prefix .. head, '1')
    redis.call('PEXPIRE', signal_prefix .. head, ARGV[3])
    return 2
end
return 1
