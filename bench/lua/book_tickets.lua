-- wrk script: POST /book-tickets, 1 ticket per booking, closed loop (one request in flight per
-- connection). Driven by bench/wrk.py; by hand:
--
--   wrk -t2 -c100 -d10s --latency --timeout 30s -s bench/lua/book_tickets.lua \
--       http://127.0.0.1:8080 -- shows.txt [customer_email]
--
-- shows.txt: one show id per line; each request books a show picked at random from it (a
-- single line: a hot show). The requests are built once per thread in init(), as wrk's manual
-- advises, so request() costs a table lookup.
--
-- Every thread counts answers by HTTP status; done() (in wrk's main Lua state) sums the
-- threads' counters and prints one line, `WRK_JSON {...}`, with the counts, wrk's error
-- counters and latency percentiles in microseconds. Responses slower than --timeout are counted
-- as timeout errors by wrk and are missing from its latency figures: give a long --timeout.

local threads = {}

function setup(thread)
   thread:set("thread_number", #threads + 1)
   table.insert(threads, thread)
end

local function read_shows(path)
   local shows = {}
   local file = assert(io.open(path, "r"), "cannot open show id file " .. tostring(path))
   for line in file:lines() do
      local id = line:match("^%s*(%S+)%s*$")
      if id then
         table.insert(shows, id)
      end
   end
   file:close()
   assert(#shows > 0, "no show ids in " .. path)
   return shows
end

local prepared = {}

function init(args)
   local path = args[1] or os.getenv("WRK_SHOWS_FILE")
   local email = args[2] or "fan@example.com"
   assert(path, "usage: -- SHOWS_FILE [CUSTOMER_EMAIL]")
   local headers = { ["Content-Type"] = "application/json" }
   for i, show_id in ipairs(read_shows(path)) do
      local body = string.format(
         '{"show_id":"%s","number_of_tickets":1,"customer_email":"%s"}', show_id, email)
      prepared[i] = wrk.format("POST", "/book-tickets", headers, body)
   end
   -- Each thread its own sequence of shows.
   math.randomseed(os.time() * 1000 + (thread_number or 0) * 7919)
   statuses = {}
end

function request()
   return prepared[math.random(#prepared)]
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

local function json_value(value)
   if type(value) == "number" and (value ~= value or value == math.huge or value == -math.huge) then
      return "null"  -- no latencies recorded: mean and stdev are not numbers
   end
   return tostring(value)
end

local function json_object(entries)
   local parts = {}
   for key, value in pairs(entries) do
      table.insert(parts, string.format('"%s":%s', tostring(key), json_value(value)))
   end
   return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
   local statuses = {}
   for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses") or {}) do
         statuses[status] = (statuses[status] or 0) + count
      end
   end
   local percentiles = {}
   for _, p in ipairs({ 50, 75, 90, 99, 99.9 }) do
      percentiles[string.format("%g", p)] = latency:percentile(p)
   end
   local result = {
      duration_us = summary.duration,
      requests = summary.requests,
      bytes = summary.bytes,
      threads = #threads,
      statuses = json_object(statuses),
      errors = json_object(summary.errors),
      latency_us = json_object({
         min = latency.min, max = latency.max, mean = latency.mean, stdev = latency.stdev,
      }),
      percentiles_us = json_object(percentiles),
   }
   io.write("WRK_JSON ", json_object(result), "\n")
end
