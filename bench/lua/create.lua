-- (d) POST /v1/keys: one durable creation per request, unique names
-- ("b-<run id>-<thread>-<counter>", names must be unique among live keys).
-- (d-idem) the same with a fresh Idempotency-Key per request (KW_IDEMPOTENT
-- set): the claim, the mark and the kept answer on top of the creation.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local c = dofile(dir .. "common.lua")

local headers = { ["Authorization"] = c.env("KW_AUTH"), ["Content-Type"] = "application/json" }
local run = c.env("KW_RUN_ID")
local idempotent = c.env("KW_IDEMPOTENT", "") ~= ""
local n = 0

function request()
  n = n + 1
  local name = "b-" .. run .. "-" .. (id or 0) .. "-" .. n
  if idempotent then headers["Idempotency-Key"] = name end
  return wrk.format("POST", "/v1/keys", headers, '{"name":"' .. name .. '"}')
end
