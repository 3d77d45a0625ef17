-- (g) the peer (djangorestframework-api-key under gunicorn): GET /api/ping
-- with "Authorization: Api-Key <key>". With KW_KEYS_FILE set, a random key
-- of that file per request; otherwise always KW_TOKEN.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local c = dofile(dir .. "common.lua")

local path = os.getenv("KW_KEYS_FILE")
local auths

if path == nil or path == "" then
  wrk.method = "GET"
  wrk.path = "/api/ping"
  wrk.headers["Authorization"] = "Api-Key " .. c.env("KW_TOKEN")
else
  function init(args)
    local keys = c.lines(path)
    auths = {}
    for i = 1, #keys do auths[i] = { ["Authorization"] = "Api-Key " .. keys[i] } end
    math.randomseed(os.time() + (id or 0) * 7919)
  end

  function request()
    return wrk.format("GET", "/api/ping", auths[math.random(#auths)], nil)
  end
end
