-- Claim CRM records by email for contacts: the contact with the smallest Nylas id owns an
-- email, whatever order pages are processed in.
-- KEYS[1] email-owner hash; ARGV email/contact-id pairs.
-- Returns, per pair, 1 when the contact owns the email (now), 0 when a smaller id does.
local out = {}
for i = 1, #ARGV, 2 do
  local email, id = ARGV[i], ARGV[i + 1]
  local cur = redis.call('HGET', KEYS[1], email)
  if (not cur) or id <= cur then
    if cur ~= id then redis.call('HSET', KEYS[1], email, id) end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
