-- Requests a uniformly random id from a contiguous range on every request.
-- Script arguments (after `--` on the wrk command line):
--   1. the request target with `{id}` where the id goes, for example `/{id}/f.bin`;
--   2. the first id of the range;
--   3. the number of ids in the range.
-- Each wrk thread runs its own Lua state; `setup` gives each one a distinct seed.

local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_seed", thread_count)
end

local prefix, suffix, first_id, id_count

function init(args)
  prefix, suffix = string.match(args[1] or "", "^(.*){id}(.*)$")
  first_id = tonumber(args[2])
  id_count = tonumber(args[3])
  if prefix == nil or first_id == nil or id_count == nil or id_count < 1 then
    error("usage: wrk -s random_ids.lua URL -- TARGET_WITH_{id} FIRST_ID ID_COUNT")
  end
  math.randomseed(os.time() * 1000 + (thread_seed or 0))
end

function request()
  local id = first_id + math.random(0, id_count - 1)
  return wrk.format("GET", prefix .. id .. suffix)
end
