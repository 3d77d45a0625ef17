-- (a-ip) POST /v1/keys/verify of one cached key, naming the end client's
-- address (the per-address throttle is asked on every request).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local c = dofile(dir .. "common.lua")

wrk.method = "POST"
wrk.path = "/v1/keys/verify"
wrk.headers["Authorization"] = c.env("KW_AUTH")
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"key":' .. c.json_str(c.env("KW_TOKEN")) .. ',"ip":"203.0.113.7"}'
