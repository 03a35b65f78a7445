-- redact.lua — personal data and secrets do not leave the organisation in
-- prompts. Every text a model would read (message content parts, author
-- names, tool-call arguments, tool results, document blocks, the system
-- prompt, embeddings input, the end-user id) is scanned
-- for e-mail addresses, phone numbers, payment cards (Luhn-checked), IBANs
-- (mod-97-checked), US social security numbers, IPv4 addresses, provider API
-- keys, AWS access keys, JWTs, PEM private keys and the policy's own
-- patterns. Each class is masked with a typed placeholder numbered per
-- distinct value in the request ([EMAIL_1]), replaced by a keyed hash
-- ([EMAIL:3f9a0c2b71de]) so equal values stay joinable without being
-- readable, or blocks the request with a 400 naming the class. Optionally
-- answers are scanned too, streams included, with a small held-back tail so
-- a value split across two events is still caught.
--
-- The audit record gets counts per class, never the values.
local redact = { name = "redact", priority = 700 }

local re, json, hash = sluice.re, sluice.json, sluice.hash
local find, sub, byte, lower, gsub = string.find, string.sub, string.byte,
  string.lower, string.gsub
local concat, sort = table.concat, table.sort
local type, ipairs, pairs, tostring, tonumber = type, ipairs, pairs, tostring, tonumber

-- ---- the classes ----------------------------------------------------------------
--
-- Built-in classes, in the order reports list them. `valid`
-- runs on every candidate and must say yes before anything is replaced;
-- `norm` is the form that decides "the same value" for numbering and
-- hashing.

local B = [[(?<![\w-])]] -- a token starts here
local E = [[(?![\w-])]]  -- and ends here

-- Lua patterns here are kept to a single quantifier-free class, or anchored
-- with one quantifier: the sandbox refuses a pattern whose backtracking
-- could cost (length ^ quantifiers) on a long text, and values (a PEM
-- block, a domain) and stream events can be tens of kilobytes.
local function digits(s) return (gsub(s, "%D", "")) end

-- At least one digit, one upper and one lower letter: real keys are random,
-- placeholders like sk-your-key-here or AKIAXXXX… are not.
local function mixed(s)
  return find(s, "%d") ~= nil and find(s, "%u") ~= nil and find(s, "%l") ~= nil
end

local function luhn(d)
  local sum, alt = 0, false
  for i = #d, 1, -1 do
    local n = byte(d, i) - 48
    if alt then
      n = n * 2
      if n > 9 then n = n - 9 end
    end
    sum, alt = sum + n, not alt
  end
  return sum % 10 == 0
end

-- Issuer prefixes and lengths of the card networks in use.
local function card_issuer_ok(d)
  local n, p2, p4 = #d, tonumber(sub(d, 1, 2)), tonumber(sub(d, 1, 4))
  local p1 = byte(d, 1) - 48
  if p1 == 4 then return n == 13 or n == 16 or n == 19 end              -- Visa
  if p2 >= 51 and p2 <= 55 then return n == 16 end                      -- Mastercard
  if p4 >= 2221 and p4 <= 2720 then return n == 16 end                  -- Mastercard 2-series
  if p2 == 34 or p2 == 37 then return n == 15 end                       -- Amex
  if p4 == 6011 or p2 == 65 or (p4 >= 6440 and p4 <= 6499) then         -- Discover
    return n >= 16 and n <= 19
  end
  if p2 == 62 then return n >= 16 and n <= 19 end                       -- UnionPay
  if p4 >= 3528 and p4 <= 3589 then return n >= 16 and n <= 19 end      -- JCB
  if p2 == 36 or p2 == 38 or p2 == 39 or (p4 >= 3000 and p4 <= 3059) then -- Diners
    return n >= 14 and n <= 19
  end
  return false
end

-- ISO 13616 lengths of the countries most prompts will meet; others pass on
-- the checksum alone.
local IBAN_LEN = { AD = 24, AE = 23, AT = 20, BA = 20, BE = 16, BG = 22, BH = 22,
  BR = 29, CH = 21, CY = 28, CZ = 24, DE = 22, DK = 18, EE = 20, ES = 24, FI = 18,
  FO = 18, FR = 27, GB = 22, GI = 23, GL = 18, GR = 27, HR = 21, HU = 28, IE = 22,
  IL = 23, IS = 26, IT = 27, KW = 30, KZ = 20, LB = 28, LI = 21, LT = 20, LU = 20,
  LV = 21, MC = 27, ME = 22, MK = 19, MT = 31, MU = 30, NL = 18, NO = 15, PK = 24,
  PL = 28, PT = 25, QA = 29, RO = 24, RS = 22, SA = 24, SE = 24, SI = 19, SK = 24,
  SM = 27, TN = 24, TR = 26, UA = 29 }

local function iban_ok(v)
  local s = gsub(v, " ", "")
  local want = IBAN_LEN[sub(s, 1, 2)]
  if want and #s ~= want then return false end
  if #s < 15 or #s > 34 then return false end
  s = sub(s, 5) .. sub(s, 1, 4)
  local r = 0
  for i = 1, #s do
    local c = byte(s, i)
    if c >= 65 then -- letters count as 10..35, two digits
      r = (r * 100 + c - 55) % 97
    else
      r = (r * 10 + c - 48) % 97
    end
  end
  return r == 1
end

local function ipv4_ok(v)
  for o in v:gmatch("%d+") do
    if #o > 1 and byte(o, 1) == 48 then return false end -- 01.02… is not an address
  end
  return true
end

local function jwt_ok(v)
  local dot = find(v, ".", 1, true)
  local raw = dot and dot > 1 and hash.base64url_decode(sub(v, 1, dot - 1))
  local obj = raw and json.decode(raw)
  return type(obj) == "table" and (obj.alg ~= nil or obj.typ ~= nil)
end

-- A PEM block with key material in it, not a ---BEGIN … … END--- example:
-- at least 64 base64 characters between the BEGIN line and the END line
-- (or the end of the value). Plain finds: a key is kilobytes long.
local function pem_ok(v)
  local head = find(v, "-----", 12, true) -- the BEGIN line's closing dashes
  if not head then return false end
  local stop = find(v, "-----END ", head + 5, true)
  local body = sub(v, head + 5, stop and stop - 1 or #v)
  local _, n = gsub(body, "[%w+/]", "")
  local _, esc = gsub(body, "\\n", "") -- JSON-escaped newlines are no key material
  return n - esc >= 64
end

local function phone_ok(v)
  local n = #digits(v)
  return n >= 8 and n <= 15
end

local OCT = [[(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)]]

local BUILTIN = {
  { name = "EMAIL", what = "an e-mail address",
    -- found at its "@" (a search for one character is fast; a pattern
    -- starting with the local part would be tried at every word); the
    -- local part is taken by looking back from there (local_part below;
    -- UTF-8 local parts as RFC 6531 allows: josé@…, 山田@…)
    pattern = [[(?<=[A-Za-z0-9._%+\x80-\xff-])@]]
      .. [[(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-]|\.[A-Za-z0-9])]],
    local_part = true,
    valid = function(v)
      local i = #v
      while i > 0 and byte(v, i) ~= 46 do i = i - 1 end -- the last "."
      local tld = lower(sub(v, i + 1))
      return not (tld == "png" or tld == "jpg" or tld == "jpeg" or tld == "gif" or
                  tld == "svg" or tld == "webp")
    end,
    norm = lower },
  { name = "PHONE", what = "a phone number",
    pattern = [[(?<![\w.+-])(?:(?:\+?1[ .-]?)?(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[ .-])[2-9]\d{2}[ .-]\d{4}]]
      .. [[|\+(?:1|[2-9]\d{0,2})(?>(?:[ .-]?\(?\d{1,4}\)?){2,6}))(?![\w-]|[.,]\d)]],
    valid = phone_ok,
    norm = function(v) return (find(v, "^%+") and "+" or "") .. digits(v) end },
  { name = "CREDIT_CARD", what = "a payment card number",
    pattern = [[(?<![\w.+-])(?:[2-6]\d{12,18}|[2-6]\d{3}(?: \d{4}){2,3}(?: \d{1,4})?]]
      .. [[|[2-6]\d{3}(?:-\d{4}){2,3}(?:-\d{1,4})?|3\d{3}[ -]\d{6}[ -]\d{4,5})(?![\w-]|[.,]\d)]],
    valid = function(v)
      local d = digits(v)
      return #d >= 13 and #d <= 19 and card_issuer_ok(d) and luhn(d)
    end,
    norm = digits },
  { name = "IBAN", what = "a bank account number (IBAN)",
    pattern = [[(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])]],
    valid = iban_ok,
    norm = function(v) return (gsub(v, " ", "")) end },
  { name = "SSN", what = "a US social security number",
    pattern = [[(?<![\w-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\g{-1}(?!0000)\d{4}(?![\w-]|[.,]\d)]],
    norm = digits },
  { name = "IPV4", what = "an IP address",
    pattern = [[(?<![\w.])(?<![Vv]ersion )(?<![Vv]er\. )]] .. OCT .. [[(?:\.]] .. OCT
      .. [[){3}(?!\w|\.\d)]],
    valid = ipv4_ok },
  { name = "OPENAI_KEY", what = "an OpenAI API key",
    pattern = B .. [[sk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}]] .. E,
    valid = function(v)
      local key = sub(v, 4)
      for _, p in ipairs({ "proj-", "svcacct-", "admin-" }) do
        if sub(key, 1, #p) == p then key = sub(key, #p + 1) end
      end
      return #key >= 20 and mixed(key)
    end },
  { name = "ANTHROPIC_KEY", what = "an Anthropic API key",
    pattern = B .. [[sk-ant-[A-Za-z0-9_-]{32,}]] .. E,
    valid = function(v) return mixed(sub(v, 8)) end },
  { name = "GITHUB_TOKEN", what = "a GitHub token",
    pattern = B .. [[(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{50,255})]] .. E,
    valid = function(v) return find(sub(v, 5), "%d") ~= nil and find(sub(v, 5), "%a") ~= nil end },
  { name = "GOOGLE_API_KEY", what = "a Google API key",
    pattern = B .. [[AIza[0-9A-Za-z_-]{35}]] .. E,
    valid = function(v) return find(sub(v, 5), "%d") ~= nil end },
  { name = "SLACK_TOKEN", what = "a Slack token",
    pattern = B .. [[xox[abposre]-[0-9A-Za-z-]{10,}]] .. E,
    valid = function(v) return #v >= 20 and #digits(v) >= 6 end },
  { name = "AWS_ACCESS_KEY", what = "an AWS access key",
    pattern = [[(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|AROA|AIDA)[A-Z2-7]{16}(?![A-Za-z0-9])]],
    valid = function(v)
      local seen, n = {}, 0
      for c in sub(v, 5):gmatch(".") do
        if not seen[c] then seen[c], n = true, n + 1 end
      end
      return n >= 6
    end },
  { name = "JWT", what = "a JSON Web Token",
    pattern = B .. [[eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*]] .. E,
    valid = jwt_ok },
  { name = "PRIVATE_KEY", what = "a private key",
    pattern = [[-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----]]
      .. [[[A-Za-z0-9+/=\s:,.\\-]*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----]]
      .. [[|(?![A-Za-z0-9+/=\s:,.\\-]))]],
    valid = pem_ok },
}

-- Literal text every value of a class contains, one of the list at least
-- (see possible() below).
local DIGIT = { digit = true }
local NEEDS = {
  EMAIL = { "@" }, PHONE = DIGIT, CREDIT_CARD = DIGIT, IBAN = DIGIT, SSN = DIGIT, IPV4 = DIGIT,
  OPENAI_KEY = { "sk-" }, ANTHROPIC_KEY = { "sk-" }, GITHUB_TOKEN = { "_" },
  GOOGLE_API_KEY = { "AIza" }, SLACK_TOKEN = { "xox" },
  AWS_ACCESS_KEY = { "AKIA", "ASIA", "ABIA", "ACCA", "AROA", "AIDA" },
  JWT = { "eyJ" }, PRIVATE_KEY = { "-----BEGIN " },
}

-- Every literal of NEEDS but digits, as one search (a superset is fine).
local LITERALS = "[@_]|sk-|xox|eyJ|AIza|A[KSBCRI][IACOD][AO]|-----BEGIN "

local BUILTIN_BY_NAME = {}
for i, c in ipairs(BUILTIN) do
  c.needs = NEEDS[c.name]
  BUILTIN_BY_NAME[c.name] = c
  c.shown = i
end

-- Where two candidates start at the same place, the more specific class
-- wins: a token before the e-mail address it is the user part of
-- (https://ghp_…@github.com), an e-mail before the number it may start with.
local TIE_ORDER = { "PRIVATE_KEY", "JWT", "ANTHROPIC_KEY", "OPENAI_KEY", "GITHUB_TOKEN",
  "GOOGLE_API_KEY", "SLACK_TOKEN", "AWS_ACCESS_KEY", "EMAIL", "IBAN", "CREDIT_CARD", "SSN",
  "PHONE", "IPV4" }
for i, name in ipairs(TIE_ORDER) do BUILTIN_BY_NAME[name].tie = i end

local MODES = { "mask", "hash", "block" }

-- ---- configuration -------------------------------------------------------------

local function class_list_check(v)
  if type(v) ~= "table" then return false, "expected a list of classes or a map of class to mode" end
  local is_list = #v > 0
  for k, x in pairs(v) do
    local name = is_list and x or k
    if type(name) ~= "string" or not BUILTIN_BY_NAME[name] then
      return false, "unknown class '" .. tostring(name) .. "'"
    end
    if not is_list and x ~= "mask" and x ~= "hash" and x ~= "block" then
      return false, name .. ": mode must be mask, hash or block"
    end
  end
  return true
end

redact.schema = {
  -- which built-in classes to look for: a list (in `mode`) or a map of
  -- class = mode; absent means every built-in class in `mode`
  classes = { type = "any", check = class_list_check },
  mode = { type = "string", one_of = MODES, default = "mask" },
  custom = { type = "array", default = {}, elements = { type = "record", fields = {
    name = { type = "string", required = true, check = function(v)
      return v:match("^[A-Z][A-Z0-9_]*$") ~= nil and #v <= 32,
        "must be an upper-case name like EMPLOYEE_ID" end },
    pattern = { type = "regex", required = true },
    mode = { type = "string", one_of = MODES },
  } } },
  -- values an allowlist pattern matches are left alone (test cards, the
  -- company's own support address…)
  allowlist = { type = "array", default = {}, elements = { type = "regex" } },
  -- the key for hash mode: a secret reference (env:NAME, file:/path), else salt
  hash_secret = { type = "string" },
  -- mixed into every hash (one tenant's hashes differ from another's);
  -- not a secret, and no replacement for hash_secret
  hash_salt = { type = "string" },
  -- also redact answers (streams too); block classes are masked there
  output = { type = "boolean", default = false },
  -- characters of a streamed answer held back so a value split across
  -- events is still seen whole
  output_holdback = { type = "integer", min = 16, max = 4096, default = 64 },
}

-- Answers are filtered only when asked to: otherwise no stream is framed
-- into events for this plugin.
function redact.phases(conf)
  return { access = true, body_filter = conf.output }
end

function redact.init(conf)
  local classes = {}
  local chosen = conf.classes
  if chosen == nil then
    for _, c in ipairs(BUILTIN) do classes[#classes + 1] = { def = c, mode = conf.mode } end
  else
    local is_list = #chosen > 0
    for _, c in ipairs(BUILTIN) do
      local mode
      if is_list then
        for _, n in ipairs(chosen) do if n == c.name then mode = conf.mode end end
      else
        mode = chosen[c.name]
      end
      if mode then classes[#classes + 1] = { def = c, mode = mode } end
    end
  end
  -- The policy's own patterns come first: they name what the organisation
  -- knows to be sensitive, more specific than any built-in shape.
  local custom = {}
  for _, p in ipairs(conf.custom) do
    if BUILTIN_BY_NAME[p.name] then
      error("custom pattern " .. p.name .. " has the name of a built-in class", 0)
    end
    custom[#custom + 1] = { def = { name = p.name, pattern = p.pattern, flags = "u",
      what = "text matching the policy's " .. p.name .. " pattern" }, mode = p.mode or conf.mode }
  end
  sort(classes, function(a, b) return a.def.tie < b.def.tie end)
  for i = #custom, 1, -1 do table.insert(classes, 1, custom[i]) end
  if #classes == 0 then error("no class to look for: classes is empty", 0) end

  -- Custom patterns and the allowlist are the policy's text: "u" (UTF-8,
  -- \w, \b and case beyond ASCII; text that is not valid UTF-8 is still
  -- searched). The built-in shapes are ASCII and searched as bytes.
  for _, c in ipairs(classes) do
    c.name, c.pattern, c.flags = c.def.name, c.def.pattern, c.def.flags
    re.find("", c.pattern, c.flags) -- compile now: a bad custom pattern fails the policy
  end
  conf.list = classes
  conf.needs = {} -- per class in list: its NEEDS, false for custom patterns
  for i, c in ipairs(classes) do conf.needs[i] = c.def.needs or false end
  -- Short texts (most messages) are first checked with one alternation of
  -- every built-in class: one search instead of one per class when nothing
  -- is there. Custom patterns stay out of it (their back-references would
  -- count other groups) and are checked one by one.
  local any = {}
  for _, c in ipairs(classes) do
    if BUILTIN_BY_NAME[c.name] then any[#any + 1] = "(?:" .. c.pattern .. ")" end
  end
  conf.any = concat(any, "|")
  conf.custom_patterns = {}
  for _, c in ipairs(custom) do conf.custom_patterns[#conf.custom_patterns + 1] = c.def.pattern end
  conf.order = {} -- for reports: custom patterns, then built-ins as listed above
  for i, c in ipairs(classes) do conf.order[c.name] = c.def.shown and (100 + c.def.shown) or i end
  if #conf.allowlist > 0 then
    local a = {}
    for i, p in ipairs(conf.allowlist) do a[i] = "(?:" .. p .. ")" end
    conf.allow = concat(a, "|")
    re.find("", conf.allow, "u")
  end
  -- Hash mode is keyed by a secret: with a known key, a 9-digit SSN, a
  -- phone number or an IPv4 address is found again from its hash by
  -- trying every value. No default key, and no hash without one.
  local hashed
  for _, c in ipairs(classes) do
    if c.mode == "hash" then hashed = hashed or (c.name .. " uses hash mode") end
  end
  if conf.mode == "hash" and (chosen == nil or #chosen > 0) then hashed = "mode is hash" end
  if hashed and not conf.hash_secret then
    error("hash_secret is required when a class is hashed (" .. hashed .. "): "
      .. "give a secret reference (env:NAME or file:/path); hash_salt is not a secret", 0)
  end
  if conf.hash_secret then
    local key, err = sluice.secret(conf.hash_secret)
    if not key or key == "" then error("hash_secret: " .. tostring(err or "the secret is empty"), 0) end
    conf.hash_key = key
  end
  conf.hash_prefix = conf.hash_salt and (conf.hash_salt .. ":") or ""
  conf.tail_context = 8 -- characters before a held-back tail kept for look-behinds
end

-- ---- scanning one text ---------------------------------------------------------

-- One search per class, merged leftmost first (ties go to the class
-- listed first). Measured on prose, one alternation of all classes costs
-- about four times the sum of the separate searches: PCRE2 then tries every
-- class at every letter, where alone each skips to the characters its
-- pattern can start with. A scanner keeps each class's next candidate, so
-- every class searches a text about once.

local LOCAL = {} -- the ASCII characters of an e-mail local part
for c in ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-"):gmatch(".") do
  LOCAL[byte(c)] = true
end

-- A local part with non-ASCII characters: the longest run of letters,
-- marks, digits and ._%+- ending the text (a dash or a quote before it is
-- not part of it), which must start with a letter or a digit.
local LOCAL_U = [[[\p{L}\p{M}\p{N}._%+-]*$]]
local LOCAL_U_START = "^[\\p{L}\\p{N}]"

-- The start of the local part before the "@" at `at` (not before `floor`),
-- or nil when it is too long (64 bytes) or does not start with a letter or
-- digit. Bytes >= 0x80 are UTF-8 (RFC 6531 addresses): letters and digits
-- of any script count, other characters end the local part.
local function local_part(s, at, floor)
  local i, utf = at - 1, false
  while i >= floor and at - i <= 65 do
    local b = byte(s, i)
    if b >= 128 then
      utf = true
    elseif not LOCAL[b] then
      break
    end
    i = i - 1
  end
  if utf then
    local run = sub(s, i + 1, at - 1)
    local f = re.find(run, LOCAL_U, "u")
    if not f or f > #run or #run - f >= 64 or not re.find(sub(run, f), LOCAL_U_START, "u") then
      return nil
    end
    return i + f
  end
  if at - i > 65 then return nil end
  local b = byte(s, i + 1)
  if not b or not (b >= 48 and b <= 57 or b >= 65 and b <= 90 or b >= 97 and b <= 122) then
    return nil
  end
  return i + 1
end

local SHORT = 512

-- Which classes text s may hold: false at index i when it lacks every
-- literal class i's values contain (NEEDS), so that class is not searched
-- there. Most prose holds no "@", no "sk-", often no digit at all: one
-- cheap search for either says so, and when it finds one, a search for a
-- digit and one for any literal, from there on, rule out classes whose own
-- searches cost more (and the alternation of all classes far more); plain
-- finds sort the literals out only when one is there. Returns the list
-- (nil when every class stays possible) and whether any class remains.
local DIGIT_OR_LITERAL = "[0-9]|" .. LITERALS
local function possible(conf, s)
  local needs, out, left = conf.needs, nil, false
  local seen -- per list of literals (shared lists are looked up once)
  local digit, literal
  local first = re.find(s, DIGIT_OR_LITERAL) -- nothing of either before it
  if not first then digit, literal = false, false end
  for i = 1, #needs do
    local n = needs[i]
    local ok = true
    if n == DIGIT then
      if digit == nil then digit = re.find(s, "[0-9]", nil, first) ~= nil end
      ok = digit
    elseif n then
      -- one search says whether any literal is there at all
      if literal == nil then literal = re.find(s, LITERALS, nil, first) ~= nil end
      seen = seen or {}
      ok = literal and seen[n]
      if ok == nil then
        ok = false
        for j = 1, #n do
          if s:find(n[j], 1, true) then ok = true; break end
        end
        seen[n] = ok
      end
    end
    if ok then
      left = true
    else
      out = out or {}
      out[i] = false
    end
  end
  return out, left
end

-- A scanner over s, or nil when a short text holds no candidate at all.
local function new_scanner(conf, s)
  local skip, left = possible(conf, s)
  if not left then return nil end
  if #s < SHORT and not skip then
    local hit = conf.any ~= "" and re.find(s, conf.any)
    if not hit then
      local cp = conf.custom_patterns
      for i = 1, #cp do
        if re.find(s, cp[i], "u") then hit = true; break end
      end
      if not hit then return nil end
    end
  end
  return { conf = conf, s = s, from = skip or {}, to = {} }
end

-- The next candidate of class i at or after init: from, to (nil at the end).
local function candidate(sc, i, init)
  local f = sc.from[i]
  if f == false then return nil end
  if f and f >= init then return f, sc.to[i] end
  local c = sc.conf.list[i]
  local s = sc.s
  while true do
    local from, to = re.find(s, c.pattern, c.flags, init)
    if not from then sc.from[i] = false; return nil end
    if c.def.local_part then from = local_part(s, from, init) end
    if from and to >= from then
      sc.from[i], sc.to[i] = from, to
      return from, to
    end
    init = to + 1 > init and to + 1 or init + 1
  end
end

-- The next accepted value from init: from, to, class, value. A candidate
-- its class does not validate (a number failing Luhn) or the allowlist
-- exempts is skipped, and that class searches on after it.
local function next_value(sc, init)
  if not sc then return nil end
  local conf, s = sc.conf, sc.s
  local list = conf.list
  while true do
    local bi, bf, bt
    for i = 1, #list do
      local f, t = candidate(sc, i, init)
      if f and (not bf or f < bf) then bi, bf, bt = i, f, t end
    end
    if not bi then return nil end
    local c = list[bi]
    local v = sub(s, bf, bt)
    local valid = c.def.valid
    if (not valid or valid(v)) and not (conf.allow and re.find(v, conf.allow, "u")) then
      return bf, bt, c, v
    end
    sc.from[bi] = nil
    local again = candidate(sc, bi, bt + 1)
    if again == nil then sc.from[bi] = false end
  end
end

-- The placeholder for value v of class c, counting it in state.
local function placeholder(conf, state, c, v, mode)
  local name = c.name
  local norm = c.def.norm and c.def.norm(v) or v
  local counts = state.counts
  if not counts then counts = {}; state.counts = counts end
  counts[name] = (counts[name] or 0) + 1
  state.total = state.total + 1
  if mode == "hash" then
    return "[" .. name .. ":"
      .. sub(hash.hmac_sha256(conf.hash_key, conf.hash_prefix .. name .. ":" .. norm), 1, 12) .. "]"
  end
  local by_class = state.ids
  if not by_class then by_class = {}; state.ids = by_class end
  local ids = by_class[name]
  if not ids then ids = { n = 0 }; by_class[name] = ids end
  local n = ids[norm]
  if not n then
    n = ids.n + 1
    ids.n, ids[norm] = n, n
  end
  return "[" .. name .. "_" .. n .. "]"
end

-- Redact s. Returns the new text (nil when nothing matched), or false and
-- the class when a block-mode value was found (never in answers).
local function redact_text(conf, state, s)
  local sc = new_scanner(conf, s)
  local from, to, c, v = next_value(sc, 1)
  if not from then return nil end
  local out, pos = {}, 1
  while from do
    local mode = c.mode
    if mode == "block" then
      if not state.answer then return false, c end
      mode = "mask"
    end
    out[#out + 1] = sub(s, pos, from - 1)
    out[#out + 1] = placeholder(conf, state, c, v, mode)
    pos = to + 1
    from, to, c, v = next_value(sc, pos)
  end
  out[#out + 1] = sub(s, pos)
  return concat(out)
end

-- Counts and numbering are made when the first value is found: most
-- requests find none.
local function new_state()
  return { total = 0 }
end

-- ---- where text lives in a request ----------------------------------------------

-- Redact a string field t[k] in place; returns false, class to block.
local function field(conf, state, t, k)
  local s = t[k]
  if type(s) ~= "string" or s == "" then return true end
  local new, blocked = redact_text(conf, state, s)
  if new == false then return false, blocked end
  if new then t[k], state.changed = new, true end
  return true
end

-- A message's author name: providers allow only [A-Za-z0-9_-] there, so
-- its placeholders lose their brackets ([EMAIL_1] -> EMAIL_1).
local function name_field(conf, state, m)
  local before = m.name
  local ok, c = field(conf, state, m, "name")
  if ok and m.name ~= before then m.name = (gsub(gsub(m.name, "[%[%]]", ""), ":", "_")) end
  return ok, c
end

-- Every string value below t (tool_use.input objects, decoded arguments).
local function deep(conf, state, t, depth)
  if depth > 32 then return true end
  for k, v in pairs(t) do
    local ok, c
    if type(v) == "string" then
      ok, c = field(conf, state, t, k)
    elseif type(v) == "table" then
      ok, c = deep(conf, state, v, depth + 1)
    else
      ok = true
    end
    if not ok then return false, c end
  end
  return true
end

-- Tool-call arguments are JSON inside a string: look first, decode only
-- when something is there, and fall back to the raw text if it is not JSON.
-- Text with a \u escape is always decoded: the raw text cannot say it is
-- clean (sk\u002dproj-…, eve\u0040example.org).
local function arguments(conf, state, fn)
  local s = fn.arguments
  if type(s) ~= "string" then return true end
  if not find(s, "\\u", 1, true) and not next_value(new_scanner(conf, s), 1) then return true end
  local obj = json.decode(s)
  if type(obj) ~= "table" then return field(conf, state, fn, "arguments") end
  local total = state.total
  local ok, c = deep(conf, state, obj, 0)
  if not ok then return false, c end
  if state.total > total then fn.arguments, state.changed = json.encode(obj), true end
  return true
end

local content

-- An Anthropic document block: its title, its context and a text source
-- (plain text in source.data, or content blocks). PDF and image sources
-- are base64 and not read.
local function document(conf, state, part)
  local ok, c = field(conf, state, part, "title")
  if ok then ok, c = field(conf, state, part, "context") end
  local src = part.source
  if ok and type(src) == "table" then
    if src.type == "text" then
      ok, c = field(conf, state, src, "data")
    elseif src.type == "content" then
      ok, c = content(conf, state, src, "content")
    end
  end
  return ok, c
end

-- A content value: a string, or a list of parts/blocks (OpenAI text parts,
-- Anthropic text, tool_use, tool_result and document blocks).
function content(conf, state, t, k)
  local v = t[k]
  if type(v) == "string" then return field(conf, state, t, k) end
  if type(v) ~= "table" then return true end
  for _, part in ipairs(v) do
    if type(part) == "table" then
      local ok, c = true, nil
      if type(part.text) == "string" then
        ok, c = field(conf, state, part, "text")
      elseif part.type == "tool_use" and type(part.input) == "table" then
        ok, c = deep(conf, state, part.input, 0)
      elseif part.type == "tool_result" then
        ok, c = content(conf, state, part, "content")
      elseif part.type == "document" then
        ok, c = document(conf, state, part)
      end
      if not ok then return false, c end
    end
  end
  return true
end

-- The texts of an OpenAI or Anthropic request, in the order a model reads
-- them: system prompt, messages (author name, content, tool calls and the
-- legacy function_call; "function" role messages are content too), then
-- embeddings or completions input, then the end-user id (`user`, often an
-- e-mail address).
local INPUTS = { "input", "prompt" }
local function walk_request(conf, state, body)
  local ok, c = content(conf, state, body, "system")
  if not ok then return false, c end
  if type(body.messages) == "table" then
    for _, m in ipairs(body.messages) do
      if type(m) == "table" then
        ok, c = name_field(conf, state, m)
        if ok then ok, c = content(conf, state, m, "content") end
        if ok and type(m.function_call) == "table" then ok, c = arguments(conf, state, m.function_call) end
        if not ok then return false, c end
        if type(m.tool_calls) == "table" then
          for _, tc in ipairs(m.tool_calls) do
            if type(tc) == "table" and type(tc["function"]) == "table" then
              ok, c = arguments(conf, state, tc["function"])
              if not ok then return false, c end
            end
          end
        end
      end
    end
  end
  for _, key in ipairs(INPUTS) do
    local v = body[key]
    if type(v) == "string" then
      ok, c = field(conf, state, body, key)
    elseif type(v) == "table" then
      for i = 1, #v do
        ok, c = field(conf, state, v, i)
        if not ok then break end
      end
    end
    if not ok then return false, c end
  end
  ok, c = field(conf, state, body, "user")
  if not ok then return false, c end
  return true
end

-- "2 EMAIL, 1 SSN" in class order.
local function summary(conf, counts)
  local names = {}
  for name in pairs(counts) do names[#names + 1] = name end
  sort(names, function(a, b) return conf.order[a] < conf.order[b] end)
  for i, name in ipairs(names) do names[i] = counts[name] .. " " .. name end
  return concat(names, ", ")
end

-- ---- access: the prompt ----------------------------------------------------------

function redact.access(ctx, conf)
  if ctx.request.method ~= "POST" then return end
  local body = ctx.request:json()
  if type(body) ~= "table" then return end
  local state = new_state()
  local ok, c = walk_request(conf, state, body)
  if not ok then
    ctx:annotate("redaction_blocked", c.name)
    return ctx:deny(400, "sensitive_data_blocked",
      "the request contains " .. c.def.what .. " (" .. c.name
        .. "), which policy does not allow to be sent to a model")
  end
  if conf.output then ctx.vars.ids = state.ids end
  if state.total == 0 then return end
  ctx.request:set_json(body)
  ctx:annotate("redactions", state.counts)
  ctx:decision("modify", "redacted " .. summary(conf, state.counts))
end

-- ---- body_filter: the answer -----------------------------------------------------

-- Per request: the output counts, numbering shared with the prompt (the
-- same address is [EMAIL_1] in both), and one held-back tail per stream
-- channel (a choice's content, an Anthropic text block).
local function out_state(ctx)
  local v = ctx.vars
  local st = v.out
  if not st then
    st = new_state()
    st.ids = v.ids or st.ids
    st.tails, st.channels = {}, {}
    v.out = st
  end
  return st
end

-- Where the run of non-space characters ending s begins (looking back at
-- most 4096 characters: a longer run is no value still arriving).
local function trailing_run(s, n)
  local i, stop = n, n - 4096
  while i > 0 and i > stop do
    local b = byte(s, i)
    if b == 32 or b == 10 or b == 13 or b == 9 then break end
    i = i - 1
  end
  if i == stop then return n + 1 end
  return i + 1
end

-- Feed text into a channel's tail; return what may be sent now. A value
-- that reaches into the last `holdback` characters, or any unbroken run of
-- non-space characters at the end (a key or token still arriving), stays
-- behind until more text comes or the channel ends (final = true).
local function feed(conf, st, key, text, final)
  local t = st.tails[key]
  if not t then t = { ctx = "", pending = "" }; st.tails[key] = t end
  local buf = t.ctx .. t.pending .. text
  local base = #t.ctx
  local n = #buf
  local safe = n
  if not final then
    safe = n - conf.output_holdback
    local run = trailing_run(buf, n)
    if run - 1 < safe then safe = run - 1 end
    if safe < base then safe = base end
  end
  local out, pos = {}, base + 1
  local sc = new_scanner(conf, buf)
  local from, to, c, v = next_value(sc, pos)
  while from do
    if to > safe then
      if from <= safe then safe = from - 1 end
      break
    end
    out[#out + 1] = sub(buf, pos, from - 1)
    out[#out + 1] = placeholder(conf, st, c, v, c.mode == "hash" and "hash" or "mask")
    pos = to + 1
    from, to, c, v = next_value(sc, pos)
  end
  if safe < pos - 1 then safe = pos - 1 end
  out[#out + 1] = sub(buf, pos, safe)
  t.pending = sub(buf, safe + 1)
  t.ctx = sub(buf, (safe - conf.tail_context > 0) and (safe - conf.tail_context + 1) or 1, safe)
  if final then st.tails[key] = nil end
  return concat(out)
end

-- The texts of an OpenAI stream delta, each its own channel: the answer,
-- a refusal, the reasoning some models stream before it.
local DELTA_TEXTS = { "content", "refusal", "reasoning_content" }

-- The tail key of a choice's field; st.channels remembers which is which.
local function channel(st, f, idx)
  local key = "c" .. tostring(idx) .. ":" .. f
  if not st.channels[key] then st.channels[key] = { f, idx } end
  return key
end

local function flush_all_openai(conf, st, out)
  for key, t in pairs(st.tails) do
    local ch = st.channels[key]
    if ch and t.pending ~= "" then
      local text = feed(conf, st, key, "", true)
      out[#out + 1] = "data: " .. json.encode({ id = st.id, object = "chat.completion.chunk",
        created = st.created, model = st.model,
        choices = { { index = ch[2], delta = { [ch[1]] = text }, finish_reason = json.null } } })
        .. "\n\n"
    end
  end
end

-- One OpenAI chunk: returns the event to send.
local function openai_event(conf, st, ev, payload)
  local obj = json.decode(payload)
  if type(obj) ~= "table" or type(obj.choices) ~= "table" then return ev end
  st.id, st.created, st.model = obj.id, obj.created, obj.model
  local changed = false
  for i, ch in ipairs(obj.choices) do
    local d = type(ch) == "table" and ch.delta
    if type(d) == "table" then
      local idx = ch.index or (i - 1)
      local final = type(ch.finish_reason) == "string"
      for _, f in ipairs(DELTA_TEXTS) do
        local text = d[f]
        if type(text) == "string" or final then
          local key = channel(st, f, idx)
          if type(text) == "string" or st.tails[key] then
            d[f] = feed(conf, st, key, type(text) == "string" and text or "", final)
            changed = true
          end
        end
      end
    end
  end
  if not changed then return ev end
  return "data: " .. json.encode(obj) .. "\n\n"
end

-- One Anthropic event (the /v1/messages front door): text deltas pass
-- through the tail; a block's stop sends what the tail still holds.
local function anthropic_event(conf, st, ev, name, payload)
  if name ~= "content_block_delta" and name ~= "content_block_stop" then return ev end
  local obj = json.decode(payload)
  if type(obj) ~= "table" then return ev end
  local key = "a" .. tostring(obj.index or 0)
  if name == "content_block_delta" then
    local d = obj.delta
    if type(d) ~= "table" or d.type ~= "text_delta" or type(d.text) ~= "string" then return ev end
    d.text = feed(conf, st, key, d.text, false)
    return "event: content_block_delta\ndata: " .. json.encode(obj) .. "\n\n"
  end
  local t = st.tails[key]
  if not t or t.pending == "" then st.tails[key] = nil; return ev end
  local rest = feed(conf, st, key, "", true)
  return "event: content_block_delta\ndata: " .. json.encode({ type = "content_block_delta",
    index = obj.index or 0, delta = { type = "text_delta", text = rest } }) .. "\n\n" .. ev
end

-- The value of an event's first `field:` line ("event", "data"), one
-- leading space dropped; nil when it has none. Plain finds: an event can
-- be any length, and a Lua pattern over it would be refused as too costly.
local function sse_field(ev, name)
  local at
  if sub(ev, 1, #name + 1) == name .. ":" then
    at = 1
  else
    at = find(ev, "\n" .. name .. ":", 1, true)
    if not at then return nil end
    at = at + 1
  end
  local from = at + #name + 1
  if byte(ev, from) == 32 then from = from + 1 end
  local nl = find(ev, "\n", from, true)
  local to = nl and nl - 1 or #ev
  if byte(ev, to) == 13 then to = to - 1 end
  return sub(ev, from, to)
end

local function stream(conf, st, data, last)
  local out, pos = {}, 1
  while pos <= #data do
    local e = find(data, "\n\n", pos, true)
    local ev = sub(data, pos, e and e + 1 or #data)
    pos = e and e + 2 or #data + 1
    local name = sub(ev, 1, 6) == "event:" and sse_field(ev, "event") or nil
    if name then name = (gsub(name, " ", "")); if name == "" then name = nil end end
    local payload = sse_field(ev, "data")
    if payload == "[DONE]" then
      flush_all_openai(conf, st, out)
      out[#out + 1] = ev
    elseif payload and name then
      out[#out + 1] = anthropic_event(conf, st, ev, name, payload)
    elseif payload then
      out[#out + 1] = openai_event(conf, st, ev, payload)
    else
      out[#out + 1] = ev
    end
  end
  if last then flush_all_openai(conf, st, out) end
  return concat(out)
end

-- A whole answer: OpenAI choices (message content, tool calls, completion
-- text) or Anthropic content blocks.
local function whole(conf, st, data)
  local obj = json.decode(data)
  if type(obj) ~= "table" then return nil end
  st.changed = false
  if type(obj.choices) == "table" then
    for _, ch in ipairs(obj.choices) do
      if type(ch) == "table" then
        field(conf, st, ch, "text")
        local m = ch.message
        if type(m) == "table" then
          content(conf, st, m, "content")
          field(conf, st, m, "refusal")
          field(conf, st, m, "reasoning_content")
          for _, tc in ipairs(type(m.tool_calls) == "table" and m.tool_calls or {}) do
            if type(tc) == "table" and type(tc["function"]) == "table" then
              arguments(conf, st, tc["function"])
            end
          end
          if type(m.function_call) == "table" then arguments(conf, st, m.function_call) end
        end
      end
    end
  elseif type(obj.content) == "table" then
    content(conf, st, obj, "content")
  end
  if not st.changed then return nil end
  return json.encode(obj)
end

local function answer_done(ctx, conf, st)
  if st.total == 0 or st.reported then return end
  st.reported = true
  ctx:annotate("output_redactions", st.counts)
  ctx:decision("modify", "redacted " .. summary(conf, st.counts) .. " in the answer")
end

function redact.body_filter(ctx, conf, data, last)
  if not conf.output then return nil end
  local resp = ctx.response
  if not resp or resp.status >= 400 then return nil end
  local st = out_state(ctx)
  st.answer = true
  local ctype = resp.headers and resp.headers["content-type"] or ""
  local res
  if find(ctype, "text/event-stream", 1, true) then
    res = stream(conf, st, data, last)
    if last or find(data, "data: [DONE]", 1, true) or find(data, "message_stop", 1, true) then
      answer_done(ctx, conf, st)
    end
  else
    res = whole(conf, st, data)
    answer_done(ctx, conf, st)
  end
  return res
end

return redact
