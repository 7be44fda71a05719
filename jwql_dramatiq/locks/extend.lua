-- extend.lua: token-checked change of a held lock's lease (renewal thread, extend(), reacquire()).
--
-- KEYS[1]  the lock key              string: the holder's token
-- KEYS[2]  <ns>:lock-owner:<name>    string: the owner record (same PX as the lock key)
--
-- ARGV[1]  token   the holder's token
-- ARGV[2]  ttl_ms  the lease to set: min(lease, time left before the maximum hold time)
--
-- Returns
--   1  RENEWED    both keys' PX is now ttl_ms
--   0  NOT_OWNED  the lock is gone or holds another token; nothing was changed
-- Python maps NOT_OWNED to LockNotOwned (the holder is told it lost the lock); any other code raises
-- LockError.

if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
