-- The routing rules of DESIGN §2 applied atomically for one inbound message.
-- bridge/core/routing.py is the specification; tests/test_routing_agreement.py checks that
-- this script makes the same decisions on random histories.
--
-- KEYS[1] contact hash   {c:<cid>}:contact
-- KEYS[2] seen zset      {c:<cid>}:seen      (provider ids, scored by arrival ms)
-- KEYS[3] change log     {p:NNN}:log         (the contact's partition: bridge/store/keys.py)
-- Every key carries the contact's partition tag (shown {c:<cid>} above for short); ticket
-- keys are built from ARGV[1], the contact's hash-tagged prefix, so every key this
-- script touches hashes to the contact's slot (Redis Cluster safe). The ticket id is not
-- known before the contact hash is read; declaring it would cost a round trip per message.
--
-- ARGV: 1 prefix, 2 provider_id, 3 now_ms, 4 new_ticket_id ('' until allocated),
--   5 channel, 6 address, 7 profile_name, 8 wa_id, 9 external_user_id,
--   10 event body, 11 event data (JSON), 12 rating ('' or 1..5), 13 payload ticket id,
--   14 replied-to id, 15 solved_reply, 16 max_thread_messages, 17 max_thread_age_s,
--   18 csat_window_s, 19 dedupe_ttl_s, 20 service_window_s, 21 contact id
--
-- Returns {action, ticket_id, status, previous_ticket_id, close_reason, event_id, rating}
-- or {'need_id'} when a ticket must be opened and ARGV[4] is empty (nothing written).

local contact_key, seen_key, log_key = KEYS[1], KEYS[2], KEYS[3]
local prefix, pid, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local new_tid = ARGV[4]
local solved_reply = ARGV[15]
local max_msgs, max_age_ms = tonumber(ARGV[16]), tonumber(ARGV[17]) * 1000
local csat_window_ms, dedupe_ms = tonumber(ARGV[18]) * 1000, tonumber(ARGV[19]) * 1000

-- The seen zset is small per contact, so Redis keeps it packed in one buffer (up to 128
-- entries: zset-max-ziplist-entries in 6.2, zset-max-listpack-entries from 7.0), and
-- ZSCORE and ZADD scan it. Measured on Redis 6.2, a script making this script's three
-- calls on it (ZSCORE, ZADD, ZREMRANGEBYSCORE) cost 3.0 µs at 1 entry, 10.5 µs at 120 and
-- 3.7 µs at 200 (a skiplist by then).
-- A contact who writes a hundred times within dedupe_ttl_s pays the most; ZADD NX in place
-- of the ZSCORE saved nothing measurable on this script (26.9 against 26.8-30.8 µs).
if redis.call('ZSCORE', seen_key, pid) then
  return {'duplicate', '', '', '', '', '', ''}
end

local c = redis.call('HMGET', contact_key, 'cur', 'survey_ticket', 'survey_msg', 'survey_at_ms')
local cur_id, survey_tid, survey_msg, survey_at = c[1], c[2], c[3], c[4]

local function tkey(id) return prefix .. ':t:' .. id end
local function ekey(id) return prefix .. ':t:' .. id .. ':events' end

local function mark_seen_and_touch_contact()
  redis.call('ZADD', seen_key, now, pid)
  redis.call('ZREMRANGEBYSCORE', seen_key, '-inf', now - dedupe_ms)
  local fields = {'id', ARGV[21], 'channel', ARGV[5], 'address', ARGV[6],
                  'window_until_ms', now + tonumber(ARGV[20]) * 1000}
  if ARGV[7] ~= '' then table.insert(fields, 'name'); table.insert(fields, ARGV[7]) end
  if ARGV[8] ~= '' then table.insert(fields, 'wa_id'); table.insert(fields, ARGV[8]) end
  if ARGV[9] ~= '' then table.insert(fields, 'external_user_id'); table.insert(fields, ARGV[9]) end
  redis.call('HSET', contact_key, unpack(fields))
end

local function add_event(id, etype, author, body, data)
  return redis.call('XADD', ekey(id), '*', 'type', etype, 'at_ms', now,
                    'author', author, 'body', body, 'data', data)
end

-- The change log entry of this message (bridge/core/changes.py reads it): written with the
-- change, so a process that dies after this script loses none of the change's consequences.
-- What its consumers would otherwise read back goes on the entry: a message to the current
-- ticket records its status before and after (the report counters' consumer then knows that
-- an append changed nothing), and an opening records the new ticket's channel and creation
-- time (which it counts).
local function log_change(action, tid, eid, prev, reason, status_from, status_to, prev_status)
  local fields = {'k', 'routed', 't', tid, 'c', ARGV[21], 'a', action, 'e', eid}
  if prev ~= '' then table.insert(fields, 'p'); table.insert(fields, prev) end
  if reason ~= '' then table.insert(fields, 'r'); table.insert(fields, reason) end
  if status_from then
    table.insert(fields, 'sf'); table.insert(fields, status_from)
    table.insert(fields, 'st'); table.insert(fields, status_to)
  end
  if action == 'new_ticket' or action == 'follow_up' then
    table.insert(fields, 'ch'); table.insert(fields, ARGV[5])
    table.insert(fields, 'ca'); table.insert(fields, now)
  end
  if prev_status then  -- the status the previous ticket had before this message closed it
    table.insert(fields, 'pf'); table.insert(fields, prev_status)
  end
  redis.call('XADD', log_key, '*', unpack(fields))
end

-- Row 2: an answer to the outstanding survey.
local rating = ARGV[12]

-- The rating recorded on the ticket (replacing an earlier one); the script's reply.
local function record_rating(rated)
  mark_seen_and_touch_contact()
  -- updated_at_ms too: incremental exports (`bridge export --since`) select on it.
  redis.call('HSET', tkey(rated), 'csat_rating', rating, 'csat_answered_at_ms', now,
             'updated_at_ms', now)
  redis.call('HINCRBY', tkey(rated), 'version', 1)
  local eid = add_event(rated, 'csat_answered', 'customer', ARGV[10],
                        cjson.encode({rating = tonumber(rating), provider_id = pid}))
  log_change('csat_answer', rated, eid, '', '')
  return {'csat_answer', rated, '', '', '', eid, rating}
end

if survey_tid and rating ~= '' then
  local answers = false
  if ARGV[13] ~= '' then
    answers = (ARGV[13] == survey_tid)
  elseif ARGV[14] ~= '' and survey_msg and survey_msg ~= '' then
    answers = (ARGV[14] == survey_msg)
  elseif survey_at then  -- none once the surveyed ticket was reopened (survey_after)
    answers = (now - tonumber(survey_at) <= csat_window_ms)
  end
  if answers then
    redis.call('HDEL', contact_key, 'survey_ticket', 'survey_msg', 'survey_at_ms')
    return record_rating(survey_tid)
  end
end
-- A survey's button tapped again, or an older survey's: the rating replaces that ticket's
-- when the ticket is this contact's (its key is under the contact's prefix) and was
-- surveyed (bridge/core/routing.route, payload_ticket_surveyed).
if rating ~= '' and ARGV[13] ~= '' then
  local sent = redis.call('HGET', tkey(ARGV[13]), 'csat_sent_at_ms')
  if sent and sent ~= '' and sent ~= '0' then
    return record_rating(ARGV[13])
  end
end

local cur = nil
if cur_id then
  local t = redis.call('HMGET', tkey(cur_id), 'status', 'session', 'message_count',
                       'created_at_ms', 'version')
  cur = {id = cur_id, status = t[1], session = t[2], count = tonumber(t[3]),
         created = tonumber(t[4]), version = tonumber(t[5]) or 0}
end

local action, prev, close_reason = nil, '', ''
if cur == nil or cur.session == 'ended' then
  action = 'new_ticket'
elseif cur.status == 'closed' then
  action, prev = 'follow_up', cur.id
elseif cur.status == 'solved' then
  if solved_reply == 'follow_up' then
    action, prev = 'follow_up', cur.id
  else
    action = 'reopen'
  end
elseif cur.count >= max_msgs or (max_age_ms > 0 and now - cur.created >= max_age_ms) then
  action, prev, close_reason = 'follow_up', cur.id, 'thread_limit'
else
  action = 'append'
end

local message_data = ARGV[11]

if action == 'new_ticket' or action == 'follow_up' then
  if new_tid == '' then return {'need_id'} end
  mark_seen_and_touch_contact()
  if prev ~= '' then
    local pkey = tkey(prev)
    local follow_ups = cjson.decode(redis.call('HGET', pkey, 'follow_ups') or '[]')
    table.insert(follow_ups, new_tid)
    redis.call('HSET', pkey, 'follow_ups', cjson.encode(follow_ups), 'updated_at_ms', now)
    if close_reason ~= '' then
      redis.call('HSET', pkey, 'status', 'closed', 'closed_at_ms', now,
                 'closed_reason', close_reason, 'session', 'ended',
                 'session_ended_reason', close_reason)
      add_event(prev, 'status_changed', 'system', '',
                cjson.encode({from = cur.status, to = 'closed', reason = close_reason}))
    elseif cur.session ~= 'ended' then
      redis.call('HSET', pkey, 'session', 'ended', 'session_ended_reason', 'follow_up')
    end
    add_event(prev, 'follow_up_created', 'system', '', cjson.encode({ticket_id = new_tid}))
    redis.call('HINCRBY', pkey, 'version', 1)
  end
  redis.call('HSET', tkey(new_tid), 'id', new_tid, 'contact_id', ARGV[21], 'channel', ARGV[5],
             'status', 'new', 'session', 'active', 'created_at_ms', now, 'updated_at_ms', now,
             'message_count', 1, 'follow_up_of', prev, 'version', 1)
  redis.call('HSET', contact_key, 'cur', new_tid)
  local eid = add_event(new_tid, 'customer_message', 'customer', ARGV[10], message_data)
  log_change(action, new_tid, eid, prev, close_reason, nil, nil,
             close_reason ~= '' and cur.status or nil)
  return {action, new_tid, 'new', prev, close_reason, eid, ''}
end

-- reopen or append to the current ticket
mark_seen_and_touch_contact()
local key = tkey(cur.id)
local status = cur.status
local status_changed = ''
if action == 'reopen' or status == 'pending' then
  status = 'open'
  status_changed = '1'
  add_event(cur.id, 'status_changed', 'system', '',
            cjson.encode({from = cur.status, to = 'open', reason = 'customer_reply'}))
end
-- A reopen of the surveyed ticket ends the window for bare ratings; its buttons and a
-- reply to it still answer (bridge/core/routing.survey_after).
if action == 'reopen' and survey_tid == cur.id then
  redis.call('HDEL', contact_key, 'survey_at_ms')
end
-- One HSET for what the message changes (the counters were read above, in this script).
redis.call('HSET', key, 'status', status, 'updated_at_ms', now,
           'message_count', cur.count + 1, 'version', cur.version + 1)
local eid = add_event(cur.id, 'customer_message', 'customer', ARGV[10], message_data)
log_change(action, cur.id, eid, '', '', cur.status, status)
return {action, cur.id, status, '', '', eid, '', status_changed}
