-- try_acquire.lua: the fast path of an acquisition: take the lock if nobody holds it and nobody waits for it.
-- The first attempt of every acquire() runs this; queued waiters run acquire.lua.
--
-- KEYS[1]  the lock key              string: the holder's token, exactly as redis-py's Lock stores it
--                                     (``<ns>:lock:<name>``, or the bare name for the redis-py drop-in).
--                                     Its PX is the lease, renewed by the holder while it lives.
-- KEYS[2]  <ns>:lock-owner:<name>    string: the owner record, JSON {"fence":N,"token_hex":...,"host":...};
--                                     written and deleted with the lock key, with the same PX.
-- KEYS[3]  <ns>:lock-fence           integer: ONE counter for the whole namespace, INCR once per successful
--                                     acquisition, so fencing tokens only grow and no per-name key outlives
--                                     a lock. The holder's token lives in its owner record.
-- KEYS[4]  <ns>:lock-queue:<name>    zset of waiting ids (see acquire.lua); present while anyone waits
--
-- ARGV[1]  token        the token to store in the lock key
-- ARGV[2]  record_tail  the owner record after its fence member: ',"token_hex":...}'
-- ARGV[3]  ttl_ms       the first lease: min(lease, maximum hold time)
--
-- Returns
--   fence >= 1  ACQUIRED  the lock is ours; the value is its new fencing token
--   0           HELD      someone holds the lock
--   -1          WAITERS   the lock is free but others are queued for it: run acquire.lua, which lets the
--                         first live waiter go first
-- Python maps HELD (and WAITERS, if acquire.lua does not get the lock either) to "not acquired"; any other
-- value raises LockError.

if redis.call('EXISTS', KEYS[1], KEYS[4]) == 0 then
    local fence = redis.call('INCR', KEYS[3])
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
    redis.call('SET', KEYS[2], '{"fence":' .. fence .. ARGV[2], 'PX', ARGV[3])
    return fence
end
if redis.call('EXISTS', KEYS[1]) == 1 then
    return 0
end
return -1
