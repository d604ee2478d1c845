-- wrk script for every benchmarked path but client_credentials (bench/client-credentials.lua),
-- for Concierge and the peer alike: the paths differ, the requests do not.
--
--   BENCH_PATH=cc          client_credentials (as bench/client-credentials.lua)
--   BENCH_PATH=code        authorization_code redemption, a fresh code per request (FIXTURES)
--   BENCH_PATH=refresh     refresh_token grant of a public client: each token rotates, so each
--                          request spends a fresh one (FIXTURES)
--   BENCH_PATH=revoke      RFC 7009 revocation of a fresh refresh token per request (FIXTURES)
--   BENCH_PATH=introspect  RFC 7662 introspection of one token (ACCESS_TOKEN: a refresh token,
--                          which both servers look up; introspect_jwt: one of our JWT access
--                          tokens, which the peer refuses to introspect)
--   BENCH_PATH=register    RFC 7591 registration of a public client
--   BENCH_PATH=discovery   GET the OpenID Connect discovery document
--   BENCH_PATH=jwks        GET the signing keys
--   BENCH_PATH=authorize   GET the authorization endpoint signed in (COOKIE, a whole Cookie
--                          header value) with consent remembered: a 303 carrying a code
--   BENCH_PATH=exchange    RFC 8693 exchange of SUBJECT_TOKEN for a token for TARGET
--   BENCH_PATH=device      RFC 8628 device grant: a device code its user approved, redeemed
--                          (FIXTURES); the device authorization request itself is limited to
--                          60 per address in ten minutes, so it is no throughput path
--
-- The confidential client is CLIENT_ID / CLIENT_SECRET (client_secret_post); the public one
-- PUBLIC_CLIENT_ID. Paths come from TOKEN_PATH, REVOKE_PATH, INTROSPECT_PATH, REGISTER_PATH,
-- DISCOVERY_PATH, JWKS_PATH, AUTHORIZE_PATH (Concierge's by default).
-- RATE (default 0: as fast as the server answers): requests per second this run holds
-- (bench/soak.sh). Each request takes the next slot of one schedule, 1/RATE s apart, and waits
-- until it; a connection waits less the longer its answer took, so the rate is held from the
-- first second whatever the latency. A run that falls behind catches up at most 100 ms of it:
-- a machine that cannot keep up shows as a rate below RATE.
-- Prints one RESULT line; `used` counts the requests made, so that the next run of a
-- FIXTURES path can start after the fixtures this one spent.
local function enc(s)
  return (s:gsub("[^%w%-_%.~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end
local function env(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  return v
end

local path = env("BENCH_PATH")
local auth = "client_id=" .. enc(env("CLIENT_ID", "bench")) .. "&client_secret=" .. enc(env("CLIENT_SECRET", ""))
local resource = enc(env("RESOURCE", "http://127.0.0.1:9999/mcp"))
local redirect = enc("http://127.0.0.1/callback")
local verifier = "bench-verifier-0123456789abcdefghijklmnopqrstuvwxyz"
-- base64url(SHA-256(verifier)), the challenge every seeded code carries.
local challenge = "sy8ruSmQf-jzCvw7Hx40pt0eCWJJ97b7o3Qr4cbG_Eo"
-- NEW_CONNECTIONS=1: every request on a connection of its own (`Connection: close`), as a
-- client that keeps no connection alive; accepting and closing it is then in every figure.
local new_connections = env("NEW_CONNECTIONS", "0") == "1"
local function headers(h)
  if new_connections then h["Connection"] = "close" end
  return h
end
local form = headers({ ["Content-Type"] = "application/x-www-form-urlencoded" })
local token_path = env("TOKEN_PATH", "/token")

local fixed, fixtures, prefix = nil, {}, nil
local next_fixture = 0

-- Built in init(), not when the script loads: wrk sets wrk.host (the Host header, which
-- HTTP/1.1 requires and the peer enforces) only after loading the script.
local function build()
  if path == "cc" then
    fixed = wrk.format("POST", token_path, form, "grant_type=client_credentials&" .. auth
      .. "&scope=" .. enc(env("SCOPE", "tools:read")) .. "&resource=" .. resource)
  elseif path == "code" then
    prefix = "grant_type=authorization_code&" .. auth .. "&code_verifier=" .. verifier
      .. "&redirect_uri=" .. redirect .. "&code="
  elseif path == "refresh" then
    prefix = "grant_type=refresh_token&client_id=" .. enc(env("PUBLIC_CLIENT_ID", "bench-public"))
      .. "&refresh_token="
  elseif path == "revoke" then
    prefix = auth .. "&token_type_hint=refresh_token&token="
  elseif path == "introspect" or path == "introspect_jwt" then
    fixed = wrk.format("POST", env("INTROSPECT_PATH", "/introspect"), form,
      auth .. "&token=" .. enc(env("ACCESS_TOKEN")))
  elseif path == "register" then
    fixed = wrk.format("POST", env("REGISTER_PATH", "/register"), headers({ ["Content-Type"] = "application/json" }),
      '{"redirect_uris":["http://127.0.0.1/callback"],"client_name":"Bench agent",'
      .. '"token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"],'
      .. '"response_types":["code"]}')
  elseif path == "discovery" then
    fixed = wrk.format("GET", env("DISCOVERY_PATH", "/.well-known/openid-configuration"), headers({}))
  elseif path == "jwks" then
    fixed = wrk.format("GET", env("JWKS_PATH", "/jwks"), headers({}))
  elseif path == "authorize" then
    fixed = wrk.format("GET", env("AUTHORIZE_PATH", "/authorize")
      .. "?response_type=code&client_id=" .. enc(env("CLIENT_ID", "bench"))
      .. "&redirect_uri=" .. redirect .. "&scope=" .. enc(env("SCOPE", "tools:read"))
      .. "&resource=" .. resource .. "&code_challenge=" .. challenge
      .. "&code_challenge_method=S256&state=bench-state", headers({ Cookie = env("COOKIE") }))
  elseif path == "exchange" then
    fixed = wrk.format("POST", token_path, form,
      "grant_type=" .. enc("urn:ietf:params:oauth:grant-type:token-exchange") .. "&" .. auth
      .. "&subject_token=" .. enc(env("SUBJECT_TOKEN"))
      .. "&subject_token_type=" .. enc("urn:ietf:params:oauth:token-type:access_token")
      .. "&resource=" .. enc(env("TARGET")))
  elseif path == "device" then
    prefix = "grant_type=" .. enc("urn:ietf:params:oauth:grant-type:device_code") .. "&" .. auth
      .. "&device_code="
  elseif path == "ciba" then
    prefix = "grant_type=" .. enc("urn:openid:params:grant-type:ciba") .. "&" .. auth
      .. "&auth_req_id="
  else
    error("BENCH_PATH: one of cc code refresh revoke introspect introspect_jwt register discovery jwks authorize exchange device ciba")
  end
end

init = function(args)
  build()
  if prefix then
    for line in io.lines(env("FIXTURES")) do
      if #line > 0 then fixtures[#fixtures + 1] = line end
    end
  end
end

local fixture_path = path == "revoke" and env("REVOKE_PATH", "/revoke") or token_path

local rate = tonumber(env("RATE", "0"))
if rate > 0 then
  -- wrk runs LuaJIT, whose ffi reads the monotonic clock (os.clock is CPU time).
  local ffi = require("ffi")
  ffi.cdef [[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clock, bench_timespec *ts);
  ]]
  local ts = ffi.new("bench_timespec")
  local function now_ms()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
  local interval, due = 1000 / rate, nil
  -- wrk calls delay() before each request and waits that many whole milliseconds. The slot
  -- is on the schedule, not after the last wait, so rounding down never adds up.
  delay = function()
    local now = now_ms()
    if due == nil then due = now elseif due < now - 100 then due = now - 100 end
    due = due + interval
    if due <= now then return 0 end
    return math.floor(due - now)
  end
end

request = function()
  if fixed then return fixed end
  next_fixture = next_fixture + 1
  -- Past the last fixture the request still goes out, and is refused: counted as an error.
  return wrk.format("POST", fixture_path, form, prefix .. enc(fixtures[next_fixture] or "exhausted"))
end

done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.0f p50_us=%d p99_us=%d errors_non2xx=%d used=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    (summary.errors.status or 0), summary.requests))
end
