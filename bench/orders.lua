-- wrk script for bench.issues' order scenarios: every request POSTs a random line of the
-- file named by $BENCH_BODIES (a JSON order) with `Authorization: Bearer $BENCH_TOKEN` and a
-- fresh `Idempotency-Key` (thread number, counter and random bits: unique per request).
-- Statuses are tallied so 409 (out of stock, expected for hot products) and 5xx are told
-- apart; the summary is printed as one `BENCH_JSON {...}` line.

local bodies = {}
local token = os.getenv("BENCH_TOKEN") or ""
local threads = {}
local counter = 0
s201, s409, s5xx, sother = 0, 0, 0, 0  -- globals: read by done() via thread:get

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

function init(args)
  for line in io.lines(os.getenv("BENCH_BODIES")) do
    if #line > 0 then bodies[#bodies + 1] = line end
  end
  math.randomseed(os.time() + 7919 * (thread_number or 0))
end

function request()
  counter = counter + 1
  local key = string.format("bench-%d-%d-%08x%08x", thread_number or 0, counter,
    math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
  return wrk.format("POST", "/v1/orders", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
    ["Idempotency-Key"] = key,
  }, bodies[math.random(#bodies)])
end

function response(status, headers, body)
  if status == 201 then s201 = s201 + 1
  elseif status == 409 then s409 = s409 + 1
  elseif status >= 500 then s5xx = s5xx + 1
  else sother = sother + 1 end
end

function done(summary, latency, requests)
  local c = {s201 = 0, s409 = 0, s5xx = 0, sother = 0}
  for _, t in ipairs(threads) do
    for k, _ in pairs(c) do c[k] = c[k] + (t:get(k) or 0) end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"s201":%d,"s409":%d,"s5xx":%d,"sother":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    c.s201, c.s409, c.s5xx, c.sother))
end
