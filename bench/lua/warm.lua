-- Cache warm-up (memory per cached key): every key of KW_KEYS_FILE verified
-- once, threads taking interleaved stripes. When a thread has sent its
-- stripe it prints "WARM_DONE" and stops; run.py then interrupts wrk (wrk
-- otherwise waits for -d). Requests still in flight repeat earlier keys.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local c = dofile(dir .. "common.lua")

local headers = { ["Authorization"] = c.env("KW_AUTH"), ["Content-Type"] = "application/json" }
local path = c.env("KW_KEYS_FILE")
local keys, i, answered, finished = nil, 0, 0, false

function init(args)
  local threads = tonumber(c.env("KW_THREADS"))
  keys = c.lines(path, id or 0, threads)
end

function request()
  i = i + 1
  local k = keys[((i - 1) % #keys) + 1]
  return wrk.format("POST", "/v1/keys/verify", headers, '{"key":' .. c.json_str(k) .. '}')
end

function response(status, hdrs, body)
  answered = answered + 1
  if answered >= #keys and not finished then
    finished = true
    io.write("WARM_DONE\n")
    io.stdout:flush()
    wrk.thread:stop()
  end
end
