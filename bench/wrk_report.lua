-- The wrk side of bench/wrk.py.
-- BENCH_WRK_TOKENS names a file of bearer tokens, one a line: the requests cycle
-- through them (one session per virtual user, as the asyncio driver does). done()
-- prints one JSON line that bench/wrk.py reads.
local tokens_path = os.getenv("BENCH_WRK_TOKENS")
if tokens_path then
  local prebuilt = {}
  for token in io.lines(tokens_path) do
    if token ~= "" then
      prebuilt[#prebuilt + 1] = wrk.format(nil, nil, { Authorization = "Bearer " .. token })
    end
  end
  local last = 0
  request = function()
    last = last % #prebuilt + 1
    return prebuilt[last]
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_WRK {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d,'
      .. ' "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
