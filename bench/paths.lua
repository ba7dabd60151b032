-- wrk script for bench.drivers: every request GETs a random line of the file named by
-- $BENCH_PATHS and, when $BENCH_CLIENTS > 0, carries `X-Forwarded-For` with one of that
-- many client addresses (198.18.0.0/15, the benchmarking range), as if through the
-- trusted reverse proxy; the summary is printed as one `BENCH_JSON {...}` line.
-- Each wrk thread runs its own copy of this script (own `paths`, own random state).

local paths = {}
local clients = tonumber(os.getenv("BENCH_CLIENTS") or "0")
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

function init(args)
  for line in io.lines(os.getenv("BENCH_PATHS")) do
    if #line > 0 then
      paths[#paths + 1] = line
    end
  end
  math.randomseed(os.time() + 7919 * (thread_number or 0))
end

function request()
  local headers = nil
  if clients > 0 then
    local n = math.random(clients) - 1
    headers = {["X-Forwarded-For"] = string.format("198.18.%d.%d", math.floor(n / 256), n % 256)}
  end
  return wrk.format("GET", paths[math.random(#paths)], headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
