-- release.lua: owner-checked compare-and-delete of a lock, then wake the first live waiter.
-- Also used by clear_lock / clear_stale_locks with the token read from the owner record.
--
-- KEYS[1]  <ns>:lock:<name>          string: the owner record, JSON starting with {"token":"<token>",
-- KEYS[2]  <ns>:lock-queue:<name>    zset: waiter token -> arrival time (server microseconds)
-- KEYS[3]  <ns>:lock-waiters:<name>  zset: waiter token -> deadline (server milliseconds)
--
-- ARGV[1]  owner_prefix   '{"token":"<token>",' for the token the caller believes holds the lock
-- ARGV[2]  signal_prefix  '<ns>:lock-signal:<name>:'; the head waiter's wake-up list is signal_prefix .. head
-- ARGV[3]  signal_ttl_ms  how long an unconsumed wake-up is kept
--
-- Returns
--   1  RELEASED        the lock was ours and is deleted; nobody was waiting
--   2  RELEASED_WOKE   the lock was ours and is deleted; the first live waiter was signalled
--   0  NOT_OWNED       the lock is gone or belongs to another token; nothing was deleted
-- Python maps NOT_OWNED to LockNotOwned; any other code raises LockError.

local record = redis.call('GET', KEYS[1])
if (not record) or string.sub(record, 1, #ARGV[1]) ~= ARGV[1] then
    return 0
end
redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 0 then
    return 1
end

local signal_prefix = ARGV[2]
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now_ms)
for i = 1, #dead do
    redis.call('ZREM', KEYS[2], dead[i])
    redis.call('ZREM', KEYS[3], dead[i])
    redis.call('DEL', signal_prefix .. dead[i])
end

local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
if head then
    redis.call('LPUSH', signal_prefix .. head, '1')
    redis.call('PEXPIRE', signal_prefix .. head, ARGV[3])
    return 2
end
return 1
