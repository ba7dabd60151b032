-- wrk script for bench.wrk: every request GETs a random line of the file named by
-- $BENCH_PATHS, and the summary is printed as one `BENCH_JSON {...}` line to parse.
-- Each wrk thread runs its own copy of this script (own `paths`, own random state).

local paths = {}
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
  return wrk.format("GET", paths[math.random(#paths)])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
