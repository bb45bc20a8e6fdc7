-- wrk's side of benchkit/wrk.py: each connection POSTs the files named after `--`,
-- round-robin, as raw bodies of the Content-Type wrk.py passes in WRK_CONTENT_TYPE;
-- done() prints one JSON line with what the run gave.
local bodies = {}
local n = 0

function init(args)
  for i, path in ipairs(args) do
    local file = assert(io.open(path, "rb"))
    bodies[i] = file:read("*a")
    file:close()
  end
end

function request()
  n = n % #bodies + 1
  local headers = { ["Content-Type"] = os.getenv("WRK_CONTENT_TYPE") }
  return wrk.format("POST", nil, headers, bodies[n])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "mean_us": %.1f, "p50_us": %d, "p90_us": %d, '
      .. '"p99_us": %d, "non_2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency.mean, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout))
end
