-- (b-batch) POST /v1/keys/verify/batch: 100 keys drawn at random from
-- KW_KEYS_FILE per request (the keys of (b), cached). 64 prebuilt bodies per
-- thread, so the load generator does little work per request; each request
-- is 100 verifications.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local c = dofile(dir .. "common.lua")

local auth = c.env("KW_AUTH")
local path = c.env("KW_KEYS_FILE")
local bodies
local headers = { ["Authorization"] = auth, ["Content-Type"] = "application/json" }

function init(args)
  local keys = c.lines(path)
  math.randomseed(os.time() + (id or 0) * 7919)
  bodies = {}
  for b = 1, 64 do
    local items = {}
    for i = 1, 100 do items[i] = '{"key":' .. c.json_str(keys[math.random(#keys)]) .. '}' end
    bodies[b] = '{"requests":[' .. table.concat(items, ",") .. ']}'
  end
end

function request()
  return wrk.format("POST", "/v1/keys/verify/batch", headers, bodies[math.random(#bodies)])
end
