-- Shared helpers for the keyward load scripts (wrk 4.x, LuaJIT).
-- Every scenario script does:
--   local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
--   dofile(dir .. "common.lua")
-- Configuration comes from environment variables set by bench/run.py:
--   KW_AUTH       value of the Authorization header sent to the server
--   KW_TOKEN      one key (scenarios with one cached key)
--   KW_IP         optional: an end-client address verify_one.lua names
--   KW_KEYS_FILE  a file of keys, one per line (spread and bad-key scenarios)
--   KW_RUN_ID     unique per run (names of created keys)

local M = {}

function M.env(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then
    if default == nil then error("environment variable " .. name .. " is required") end
    return default
  end
  return v
end

-- Read a file's non-empty lines. With stripe/of, keep only lines whose
-- 0-based index i satisfies i % of == stripe (threads share the work).
function M.lines(path, stripe, of)
  local out, i = {}, 0
  local f = assert(io.open(path, "r"))
  for line in f:lines() do
    if line ~= "" then
      if of == nil or i % of == stripe then out[#out + 1] = line end
      i = i + 1
    end
  end
  f:close()
  assert(#out > 0, "no lines in " .. path)
  return out
end

-- Give every thread an id (0-based) so scripts can split work.
local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

-- Print one parseable line with the run's totals and latency percentiles
-- (microseconds). bench/run.py looks for the "WRK_RESULT " prefix.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end

-- JSON string escaping for the few characters keys and names can hold.
function M.json_str(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

return M
