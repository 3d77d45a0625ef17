-- OAuth issuance: POST /oauth/token, client_credentials with
-- client_secret_basic, one prebuilt request (KW_BASIC: the Authorization
-- header's value).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

wrk.method = "POST"
wrk.path = "/oauth/token"
wrk.headers["Authorization"] = os.getenv("KW_BASIC")
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.body = "grant_type=client_credentials"
