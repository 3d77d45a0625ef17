-- (d) POST /v1/keys: one durable creation per request, unique names
-- ("b-<run id>-<thread>-<counter>", names must be unique among live keys).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local c = dofile(dir .. "common.lua")

local headers = { ["Authorization"] = c.env("KW_AUTH"), ["Content-Type"] = "application/json" }
local run = c.env("KW_RUN_ID")
local n = 0

function request()
  n = n + 1
  return wrk.format("POST", "/v1/keys", headers,
    '{"name":"b-' .. run .. '-' .. (id or 0) .. '-' .. n .. '"}')
end
