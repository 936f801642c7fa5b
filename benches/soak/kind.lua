-- wrk script of benches/soak.sh: one request kind per wrk process, so that wrk's own error
-- counts (socket errors, statuses of 400 or more) belong to that kind alone.
--
-- Arguments after `--`: kind token first_id id_count
--   hit        good token, ids first_id .. first_id+id_count-1, all in the store
--   miss       good token, random ids that neither the store nor the upstream has
--   proxied    paths that the proxy forwards to the upstream (GET and POST)
--   bad_token  ids of the store with wrong or malformed tokens
--   bad_input  missing parameters, empty or invalid ids, malformed percent-encoding
--
-- Every response is classified from its content, and `done` prints one SOAK_KIND line with
-- the counts of responses that match the kind (`expected`) and of those that do not.
-- Files in the store are named `soak-<size>.bin`, so a hit also checks the body length.

local token, first_id, id_count
local counter = 0

-- Per-thread globals, read by `done` through `thread:get`.
kind = nil
sent = 0
expected = 0
unexpected = 0
first_bad = ""

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  kind = args[1]
  token = args[2]
  first_id = tonumber(args[3])
  id_count = tonumber(args[4])
  if kind == nil or token == nil or first_id == nil or id_count == nil then
    error("usage: wrk ... -s kind.lua URL -- KIND TOKEN FIRST_ID ID_COUNT")
  end
  math.randomseed(os.time() + math.floor(os.clock() * 1000000) + #tostring({}))
end

local function small_file(query, close)
  local headers = {}
  if close then
    headers["Connection"] = "close"
  end
  return wrk.format("GET", "/api/get_small_file?" .. query, headers)
end

local function cached_id()
  return first_id + (counter % id_count)
end

local bad_tokens = {
  function() return "wrong-" .. counter end,
  function() return string.sub(token, 1, #token - 1) end,
  function() return token .. "x" end,
  function() return string.upper(token) end,
  function() return "%E0%A4%A" end,
  function() return "%ZZ" .. token end,
}

local bad_inputs = {
  function() return "file_id=" .. cached_id() end,
  function() return "token=" .. token end,
  function() return "token=" .. token .. "&file_id=" end,
  function() return "token=&file_id=" .. cached_id() end,
  function() return "token=" .. token .. "&file_id=abc" end,
  function() return "token=" .. token .. "&file_id=99999999999999999999" end,
  function() return "token=" .. token .. "&file_id=1.5" end,
  function() return "token=" .. token .. "&file_id=%ZZ" end,
  function() return "&&=&token" end,
  function() return "" end,
}

local proxied = {
  function() return wrk.format("GET", "/api/bootstrap?token=" .. token) end,
  function() return wrk.format("GET", "/rest/v1/config/fe") end,
  function() return wrk.format("GET", "/api/get_small_file/?token=" .. token .. "&file_id=1") end,
  function()
    return wrk.format("POST", "/api/query/default_cluster/db",
      { ["Content-Type"] = "application/json" }, '{"stmt":"select 1"}')
  end,
  function() return wrk.format("GET", "/api/show_proc?path=/backends", { ["Connection"] = "close" }) end,
}

function request()
  counter = counter + 1
  sent = sent + 1
  if kind == "hit" then
    -- Every 8th request closes its connection, so connections open and close during the run.
    local close = counter % 8 == 0
    if counter % 2 == 0 then
      return small_file("file_id=" .. cached_id() .. "&token=" .. token, close)
    end
    return small_file("token=" .. token .. "&file_id=" .. cached_id(), close)
  elseif kind == "miss" then
    return small_file("token=" .. token .. "&file_id=" .. (900000000 + math.random(0, 99999999)), false)
  elseif kind == "proxied" then
    return proxied[counter % #proxied + 1]()
  elseif kind == "bad_token" then
    local bad = bad_tokens[counter % #bad_tokens + 1]()
    return small_file("token=" .. bad .. "&file_id=" .. cached_id(), false)
  elseif kind == "bad_input" then
    return small_file(bad_inputs[counter % #bad_inputs + 1](), false)
  end
  error("unknown kind " .. tostring(kind))
end

local function header(headers, name)
  for key, value in pairs(headers) do
    if string.lower(key) == name then
      return value
    end
  end
  return nil
end

local function has(body, text)
  return string.find(body, text, 1, true) ~= nil
end

-- Returns the class of one response: file, bad_file, upstream, not_found, invalid_token,
-- bad_request, error or other.
local function classify(status, headers, body)
  if status == 200 then
    local disposition = header(headers, "content-disposition")
    if disposition ~= nil then
      local size = tonumber(string.match(disposition, "soak%-(%d+)%.bin"))
      if size ~= nil and size == #body then
        return "file"
      end
      return "bad_file"
    end
    if header(headers, "x-soak-upstream") ~= nil then
      return "upstream"
    end
    if has(body, '"data":"File not found or is not content"') then
      return "not_found"
    end
    if has(body, '"data":"Invalid token"') then
      return "invalid_token"
    end
    if has(body, '"data":"Missing parameter') or has(body, '"data":"Invalid file id format') then
      return "bad_request"
    end
    if has(body, "Failed to get small file") then
      return "error"
    end
  end
  return "other"
end

local expected_class = {
  hit = "file",
  miss = "not_found",
  proxied = "upstream",
  bad_token = "invalid_token",
  bad_input = "bad_request",
}

function response(status, headers, body)
  if classify(status, headers, body) == expected_class[kind] then
    expected = expected + 1
  else
    unexpected = unexpected + 1
    if first_bad == "" then
      first_bad = string.format("status %d body %q", status, string.sub(body, 1, 160))
    end
  end
end

function done(summary, latency, requests)
  local total_sent, total_expected, total_unexpected = 0, 0, 0
  local bad = ""
  for _, thread in ipairs(threads) do
    total_sent = total_sent + thread:get("sent")
    total_expected = total_expected + thread:get("expected")
    total_unexpected = total_unexpected + thread:get("unexpected")
    if bad == "" then
      bad = thread:get("first_bad")
    end
  end
  io.write(string.format(
    "SOAK_KIND kind=%s sent=%d completed=%d expected=%d unexpected=%d connect_errors=%d read_errors=%d write_errors=%d status_errors=%d timeouts=%d p50_us=%d p99_us=%d\n",
    threads[1]:get("kind"), total_sent, summary.requests, total_expected, total_unexpected,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
  if bad ~= "" then
    io.write("SOAK_FIRST_UNEXPECTED " .. bad .. "\n")
  end
end
