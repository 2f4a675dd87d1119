-- palisade-store: reserve one slot on several counters, all or nothing.
-- KEYS[1..n]: counters; KEYS[n+1..2n]: the mark that exempts counter i, or a
-- placeholder when ARGV[3i] is '0'. ARGV[3i-2], ARGV[3i-1], ARGV[3i]: limit,
-- ttl in ms, and '1' when counter i has an exempting mark.
-- Returns {allowed, then per counter: state (0 refused, 1 reserved,
-- 2 skipped), count, pttl of a refusing counter in ms}.
local n = #KEYS / 2
local allowed = 1
local state, counts, waits = {}, {}, {}
local seen = {}
for i = 1, n do
  local key = KEYS[i]
  local limit = tonumber(ARGV[3 * i - 2])
  local skip = ARGV[3 * i] == '1' and redis.call('EXISTS', KEYS[n + i]) == 1
  if skip then
    state[i], counts[i], waits[i] = 2, 0, 0
  else
    local c = seen[key]
    if c == nil then c = tonumber(redis.call('GET', key) or '0') end
    if c >= limit then
      allowed = 0
      state[i], counts[i] = 0, c
      local pttl = redis.call('PTTL', key)
      if pttl < 0 then pttl = 0 end
      waits[i] = pttl
    else
      state[i], counts[i], waits[i] = 1, c + 1, 0
    end
    seen[key] = c + 1
  end
end
if allowed == 1 then
  for i = 1, n do
    if state[i] == 1 then
      redis.call('INCR', KEYS[i])
      redis.call('PEXPIRE', KEYS[i], ARGV[3 * i - 1])
    end
  end
end
local out = {allowed}
for i = 1, n do
  out[3 * i - 1] = state[i]
  out[3 * i] = counts[i]
  out[3 * i + 1] = waits[i]
end
return out
