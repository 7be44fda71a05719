-- try_acquire.lua: the fast path of an acquisition: take the lock if nobody holds it and nobody waits for it.
-- The first attempt of every acquire() runs this; queued waiters run acquire.lua.
--
-- KEYS[1]  <ns>:lock:<name>        string: the owner record, JSON starting with {"token":"<token>",
--                                   (then "acquired_at", "lease_s", "timeout_s", "host", "pid", ...).
--                                   Its PX is the lease, renewed by the holder while it lives.
-- KEYS[2]  <ns>:lock-fence:<name>  integer: the fencing token. INCR once per successful acquisition and
--                                   never expires, so it only grows, and while the lock is held it is the
--                                   holder's token.
-- KEYS[3]  <ns>:lock-queue:<name>  zset of waiting tokens (see acquire.lua); present while anyone waits
--
-- ARGV[1]  record  the owner record to write
-- ARGV[2]  ttl_ms  the first lease: min(lease, maximum hold time)
--
-- Returns
--   fence >= 1  ACQUIRED  the lock is ours; the value is its new fencing token
--   0           HELD      someone holds the lock
--   -1          WAITERS   the lock is free but others are queued for it: run acquire.lua, which lets the
--                         first live waiter go first
-- Python maps HELD (and WAITERS, if acquire.lua does not get the lock either) to LockNotAcquired; any other
-- value raises LockError.

if redis.call('EXISTS', KEYS[1], KEYS[3]) == 0 then
    local fence = redis.call('INCR', KEYS[2])
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return fence
end
if redis.call('EXISTS', KEYS[1]) == 1 then
    return 0
end
return -1
