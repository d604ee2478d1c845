-- wrk script for the token paths other than client_credentials (bench/paths.sh):
--   BENCH_PATH=code        authorization_code redemption, a fresh code per request (CODES_FILE)
--   BENCH_PATH=refresh     refresh_token grant, a confidential client's token (REFRESH_FILE)
--   BENCH_PATH=introspect  RFC 7662 introspection of one access token (ACCESS_TOKEN)
-- The client is CLIENT_ID / CLIENT_SECRET (client_secret_post).
local function enc(s) return (s:gsub("[^%w%-_%.~]", function(c) return string.format("%%%02X", string.byte(c)) end)) end
local path = os.getenv("BENCH_PATH")
local auth = "client_id=" .. enc(os.getenv("CLIENT_ID")) .. "&client_secret=" .. enc(os.getenv("CLIENT_SECRET"))
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
local codes, next_code = {}, 0
local fixed

local function lines(file)
  local t = {}
  for l in io.lines(file) do if #l > 0 then t[#t + 1] = l end end
  return t
end

if path == "code" then
  codes = lines(os.getenv("CODES_FILE"))
  -- Threads share no state: each takes every THREADS-th code from its own offset.
elseif path == "refresh" then
  fixed = wrk.format("POST", "/token", headers, "grant_type=refresh_token&" .. auth
    .. "&refresh_token=" .. enc(lines(os.getenv("REFRESH_FILE"))[1]))
elseif path == "introspect" then
  fixed = wrk.format("POST", "/introspect", headers, auth .. "&token=" .. enc(os.getenv("ACCESS_TOKEN")))
else
  error("BENCH_PATH must be code, refresh or introspect")
end

local verifier = "bench-verifier-0123456789abcdefghijklmnopqrstuvwxyz"
local redirect = enc("http://127.0.0.1/callback")
request = function()
  if fixed then return fixed end
  next_code = next_code + 1
  local code = codes[next_code] or "exhausted"
  return wrk.format("POST", "/token", headers, "grant_type=authorization_code&" .. auth
    .. "&code=" .. enc(code) .. "&code_verifier=" .. verifier .. "&redirect_uri=" .. redirect)
end

done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.0f p50_us=%d p99_us=%d errors_non2xx=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    (summary.errors.status or 0)))
end
