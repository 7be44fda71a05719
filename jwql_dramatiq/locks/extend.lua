-- extend.lua: owner-checked renewal of a held lock's lease (run by the renewal thread).
--
-- KEYS[1]  <ns>:lock:<name>  string: the owner record, JSON starting with {"token":"<token>",
--
-- ARGV[1]  owner_prefix  '{"token":"<token>",' for the holder's token
-- ARGV[2]  ttl_ms        the lease to set: min(lease, time left before the maximum hold time)
--
-- Returns
--   1  RENEWED    the lock's PX is now ttl_ms
--   0  NOT_OWNED  the lock is gone or belongs to another token; nothing was changed
-- Python maps NOT_OWNED to LockNotOwned (the holder is told it lost the lock); any other code raises
-- LockError.

local record = redis.call('GET', KEYS[1])
if (not record) or string.sub(record, 1, #ARGV[1]) ~= ARGV[1] then
    return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
