-- Forward-auth hook: GET /v1/authorize with the key as a bearer token, the
-- original request in the headers a reverse proxy (Traefik ForwardAuth)
-- sends, and the gateway's own key in X-Keyward-Verifier-Key (KW_VERIFIER_KEY,
-- the admin key: like (a), two keys are verified per request). One cached
-- key, comparable with (a) and (f).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local c = dofile(dir .. "common.lua")

wrk.method = "GET"
wrk.path = "/v1/authorize"
wrk.headers["Authorization"] = "Bearer " .. c.env("KW_TOKEN")
wrk.headers["X-Forwarded-Method"] = "GET"
wrk.headers["X-Forwarded-Uri"] = "/api/ping"
wrk.headers["X-Keyward-Verifier-Key"] = c.env("KW_VERIFIER_KEY")
wrk.body = nil
