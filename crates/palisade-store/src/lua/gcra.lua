-- palisade-store: GCRA over several keys, all or nothing, on the server's clock.
-- KEYS[i]: the keys. ARGV[3i-2], ARGV[3i-1], ARGV[3i]: interval, tolerance
-- (burst x interval) and cost of key i, in microseconds and units.
-- Returns {allowed (1/0), offset_1, ..., offset_n}: how far each key's
-- theoretical arrival time was ahead of now before this request, in us.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local allowed = 1
local offsets = {}
local pending = {}
for i = 1, n do
  local interval = tonumber(ARGV[3 * i - 2])
  local tolerance = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local tat = pending[KEYS[i]]
  if tat == nil then
    tat = tonumber(redis.call('GET', KEYS[i]) or now)
  end
  if tat < now then tat = now end
  offsets[i] = tat - now
  local new_tat = tat + interval * cost
  if new_tat - now > tolerance then allowed = 0 end
  pending[KEYS[i]] = new_tat
end
if allowed == 1 then
  local written = {}
  for i = 1, n do
    local key = KEYS[i]
    if not written[key] then
      written[key] = true
      local new_tat = pending[key]
      if new_tat > now then
        local ttl_ms = math.ceil((new_tat - now) / 1000)
        redis.call('SET', key, string.format('%.0f', new_tat), 'PX', ttl_ms)
      end
    end
  end
end
local out = {allowed}
for i = 1, n do out[i + 1] = offsets[i] end
return out
