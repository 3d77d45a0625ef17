-- (e) mixed: ~90% verifications of keys spread over KW_KEYS_FILE, ~5% key
-- creations, ~5% revocations of keys this thread created earlier in the
-- run (their ids are read from the 201 responses), so every revoke hits a
-- live key exactly once and runs can repeat on the same database.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local c = dofile(dir .. "common.lua")

local headers = { ["Authorization"] = c.env("KW_AUTH"), ["Content-Type"] = "application/json" }
local path = c.env("KW_KEYS_FILE")
local run = c.env("KW_RUN_ID")
local create_pct = tonumber(c.env("KW_CREATE_PCT", "5")) / 100
local revoke_pct = tonumber(c.env("KW_REVOKE_PCT", "5")) / 100
local bodies, n = nil, 0
local created, head, tail = {}, 1, 0

function init(args)
  local keys = c.lines(path)
  bodies = {}
  for i = 1, #keys do bodies[i] = '{"key":' .. c.json_str(keys[i]) .. '}' end
  math.randomseed(os.time() + (id or 0) * 7919)
end

function request()
  local r = math.random()
  if r < revoke_pct and head <= tail then
    local key_id = created[head]
    created[head] = nil
    head = head + 1
    return wrk.format("POST", "/v1/keys/" .. key_id .. "/revoke", headers, "")
  elseif r < revoke_pct + create_pct then
    n = n + 1
    return wrk.format("POST", "/v1/keys", headers,
      '{"name":"m-' .. run .. '-' .. (id or 0) .. '-' .. n .. '"}')
  end
  return wrk.format("POST", "/v1/keys/verify", headers, bodies[math.random(#bodies)])
end

function response(status, hdrs, body)
  if status == 201 then
    local key_id = body:match('"id":"(key_[%w]+)"')
    if key_id then
      tail = tail + 1
      created[tail] = key_id
    end
  end
end
