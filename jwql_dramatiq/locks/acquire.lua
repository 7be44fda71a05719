-- acquire.lua: take a lock if it is free and no earlier live waiter is queued, writing its owner record;
-- otherwise (when asked) join the FIFO queue of waiters. Used by waiters, after try_acquire.lua failed.
--
-- Key layout (all under one prefix, <ns> = the configured namespace):
-- KEYS[1]  the lock key              string: the holder's token (see try_acquire.lua). Its PX is the lease.
-- KEYS[2]  <ns>:lock-owner:<name>    string: the owner record, written with the lock key, same PX.
-- KEYS[4]  <ns>:lock-fence           integer: the namespace's one fencing counter, INCR once per successful
--                                     acquisition. Never expires, so it only grows.
-- KEYS[5]  <ns>:lock-queue:<name>    zset: waiter id -> arrival time (server microseconds). FIFO order.
-- KEYS[5]  <ns>:lock-waiters:<name>  zset: waiter id -> deadline (server milliseconds). A waiter that has
--                                     not come back by its deadline is presumed dead and dropped from both zsets.
--
-- ARGV[1]  waiter_id      random hex id of this acquisition attempt (its member in the zsets)
-- ARGV[2]  token          the token to store in the lock key
-- ARGV[3]  record_tail    the owner record after its fence member
-- ARGV[4]  ttl_ms         the first lease: min(lease, maximum hold time)
-- ARGV[5]  max_wait_ms    0: try once, do not queue. > 0: join the queue, and hand back a wait of at most this
-- ARGV[6]  grace_ms       how long past its wait a queued waiter keeps its place
-- ARGV[7]  signal_prefix  '<ns>:lock-signal:<name>:'; a waiter's wake-up list is signal_prefix .. waiter_id
--
-- Returns
--   {1, fence}    ACQUIRED  the lock is ours; fence is its new fencing token
--   {2, wait_ms}  HELD      someone holds the lock; wait up to wait_ms for a wake-up (the holder's remaining
--                           lease, capped by max_wait_ms; 0 when not queued), then try again
--   {3, wait_ms}  QUEUED    the lock is free but an earlier waiter goes first; wait_ms likewise
-- Python maps HELD and QUEUED to LockNotAcquired when it gives up; any other code raises LockError.

local waiter_id = ARGV[1]
local max_wait_ms = tonumber(ARGV[5])
local signal_prefix = ARGV[7]
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Drop waiters that stopped coming back (they crashed, or gave up without leaving).
local dead = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now_ms)
for i = 1, #dead do
    redis.call('ZREM', KEYS[4], dead[i])
    redis.call('ZREM', KEYS[5], dead[i])
    redis.call('DEL', signal_prefix .. dead[i])
end

local code
local wait_ms
local pttl = redis.call('PTTL', KEYS[1])
if pttl == -2 then
    local head = redis.call('ZRANGE', KEYS[4], 0, 0)[1]
    if (not head) or head == waiter_id then
        local fence = redis.call('INCR', KEYS[3])
        redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
        redis.call('SET', KEYS[2], '{"fence":' .. fence .. ARGV[3], 'PX', ARGV[4])
        if head then
            redis.call('ZREM', KEYS[4], waiter_id)
            redis.call('ZREM', KEYS[5], waiter_id)
            redis.call('DEL', signal_prefix .. waiter_id)
        end
        return {1, fence}
    end
    code = 3
    local head_deadline = redis.call('ZSCORE', KEYS[5], head)
    if head_deadline then wait_ms = tonumber(head_deadline) - now_ms else wait_ms = 1 end
else
    code = 2
    if pttl < 0 then wait_ms = max_wait_ms else wait_ms = pttl end
end

if max_wait_ms <= 0 then return {code, 0} end
if wait_ms > max_wait_ms then wait_ms = max_wait_ms end
if wait_ms < 1 then wait_ms = 1 end

-- Join the queue (keeping an earlier place) and push this waiter's deadline back.
redis.call('ZADD', KEYS[4], 'NX', tonumber(t[1]) * 1000000 + tonumber(t[2]), waiter_id)
redis.call('ZADD', KEYS[5], now_ms + wait_ms + tonumber(ARGV[6]), waiter_id)
-- The queue lives exactly as long as its last waiter's deadline.
local last = redis.call('ZRANGE', KEYS[5], -1, -1, 'WITHSCORES')
local keep_ms = math.floor(tonumber(last[2]) - now_ms) + 1
redis.call('PEXPIRE', KEYS[4], keep_ms)
redis.call('PEXPIRE', KEYS[5], keep_ms)
return {code, wait_ms}
