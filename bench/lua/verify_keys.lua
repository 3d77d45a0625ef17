-- (b) spread, (b') cache miss and (c) bad keys: POST /v1/keys/verify with a
-- key drawn at random from KW_KEYS_FILE for every request. run.py writes
-- that file (a random sample of at most 200k of the N keys, or the bad keys)
-- so each thread loads at most a few MB.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local c = dofile(dir .. "common.lua")

local auth = c.env("KW_AUTH")
local path = c.env("KW_KEYS_FILE")
local bodies
local headers = { ["Authorization"] = auth, ["Content-Type"] = "application/json" }

function init(args)
  local keys = c.lines(path)
  bodies = {}
  for i = 1, #keys do bodies[i] = '{"key":' .. c.json_str(keys[i]) .. '}' end
  math.randomseed(os.time() + (id or 0) * 7919)
end

function request()
  return wrk.format("POST", "/v1/keys/verify", headers, bodies[math.random(#bodies)])
end
