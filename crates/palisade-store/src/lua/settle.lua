-- palisade-store: settle a reservation, every step atomically.
-- ARGV[2i-1]: the step for KEYS[i] ('release', 'clear', 'mark', 'unmark');
-- ARGV[2i]: the mark's ttl in ms (unused otherwise).
for i = 1, #KEYS do
  local op = ARGV[2 * i - 1]
  local key = KEYS[i]
  if op == 'release' then
    local c = tonumber(redis.call('GET', key) or '0')
    if c > 0 then redis.call('DECR', key) end
  elseif op == 'mark' then
    redis.call('SET', key, '1', 'PX', ARGV[2 * i])
  else
    redis.call('DEL', key)
  end
end
return 1
