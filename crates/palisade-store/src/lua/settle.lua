-- palisade-store: settle a reservation, every step atomically.
-- ARGV[3i-2]: the step for KEYS[i] ('release', 'clear', 'mark', 'unmark',
-- 'stamp'); ARGV[3i-1]: a mark's or stamp's ttl in ms; ARGV[3i]: a stamp's
-- time in unix seconds (both unused otherwise).
for i = 1, #KEYS do
  local op = ARGV[3 * i - 2]
  local key = KEYS[i]
  if op == 'release' then
    local c = tonumber(redis.call('GET', key) or '0')
    if c > 0 then redis.call('DECR', key) end
  elseif op == 'mark' then
    redis.call('SET', key, '1', 'PX', ARGV[3 * i - 1])
  elseif op == 'stamp' then
    -- A later stamp already there is kept.
    local at = tonumber(ARGV[3 * i])
    if at >= tonumber(redis.call('GET', key) or '-1') then
      redis.call('SET', key, ARGV[3 * i], 'PX', ARGV[3 * i - 1])
    end
  else
    redis.call('DEL', key)
  end
end
return 1
