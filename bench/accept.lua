-- wrk script of bench/accept.py: POST a send body with a new event_id on every request (so each
-- is a new notification, not an idempotent replay), to a recipient among RECIPIENTS.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  thread_id = tonumber(id) or 0
  run = args[1] or "run"
  recipients = tonumber(args[2]) or 50
end

request = function()
  counter = counter + 1
  local body = string.format(
    '{"recipient":"bench-%d","template":"order-shipped","data":{"name":"지우","order":"B-%d"},"event_id":"%s-%d-%d"}',
    counter % recipients, counter, run, thread_id, counter)
  return wrk.format("POST", nil, nil, body)
end

bad = 0

response = function(status, headers, body)
  if status ~= 202 then
    bad = bad + 1  -- a global of this thread's state, read by done() through thread:get
  end
end

done = function(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + (thread:get("bad") or 0)
  end
  io.write(string.format("NOT_202 %d\n", bad))
  io.write(string.format("P50_MS %.2f\nP99_MS %.2f\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
