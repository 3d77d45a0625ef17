-- (a) keyward and (f) floor: POST /v1/keys/verify, always the same key
-- (after the first request it is a cache hit). One prebuilt request, so the
-- load generator does the least work possible per request. With KW_IP, the
-- body names that end-client address too (the per-address throttle is
-- asked on every request).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local c = dofile(dir .. "common.lua")

wrk.method = "POST"
wrk.path = "/v1/keys/verify"
wrk.headers["Authorization"] = c.env("KW_AUTH")
wrk.headers["Content-Type"] = "application/json"
local ip = c.env("KW_IP", "")
wrk.body = '{"key":' .. c.json_str(c.env("KW_TOKEN")) .. (ip ~= "" and (',"ip":' .. c.json_str(ip)) or "") .. '}'
