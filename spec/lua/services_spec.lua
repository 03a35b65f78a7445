-- services_spec.lua — the runtime services plugins reach as sluice.json,
-- sluice.re, sluice.hash and sluice.shared (core/lua_*.c). Concurrency of
-- the shared dictionary is covered in C (spec/c/test_shdict.c).
local json = require "sluice.json"
local re = require "sluice.re"
local hash = require "sluice.hash"
local shared = require "sluice.shared"

describe("sluice.json", function()
  local function roundtrip(s) return json.encode(assert(json.decode(s))) end

  it("round-trips nested documents", function()
    local s = '{"a":[1,2,{"b":[true,false,null]}]}'
    assert.are.equal(s, roundtrip(s))
    local v = json.decode('{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"n":2}')
    assert.are.equal("gpt-4o", v.model)
    assert.are.equal("hi", v.messages[1].content)
    assert.are.equal(2, v.n)
  end)

  it("keeps empty arrays and objects apart through decode and encode", function()
    assert.are.equal("[]", roundtrip("[]"))
    assert.are.equal("{}", roundtrip("{}"))
    assert.are.equal('{"a":[]}', roundtrip('{"a":[]}'))
    assert.are.equal("{}", json.encode({}))
    assert.are.equal("[]", json.encode(json.empty_array()))
    assert.are.equal("[]", json.encode(setmetatable({}, json.array_mt)))
    -- the markers are locked: getmetatable names them instead of exposing
    -- the shared tables (lua_bridge.c)
    assert.are.equal("array_mt", getmetatable(json.decode("[1]")))
    assert.are.equal("object_mt", getmetatable(json.decode('{"a":1}')))
  end)

  it("decodes null to the json.null sentinel and encodes it back", function()
    local v = json.decode('{"a":null,"b":[null]}')
    assert.are.equal(json.null, v.a)
    assert.are.equal(json.null, v.b[1])
    assert.are.equal(1, #v.b)
    assert.are.equal("null", json.encode(json.null))
    assert.are.equal('[1,null,3]', json.encode({ 1, json.null, 3 }))
    assert.are.equal(json.null, json.decode("null"))
  end)

  it("decodes and encodes unicode and escapes", function()
    local v = json.decode('"caf\\u00e9 \\ud83d\\ude00 \\"q\\" \\\\ \\/ \\n\\t"')
    assert.are.equal('café 😀 "q" \\ / \n\t', v)
    assert.are.equal('"café 😀"', json.encode("café 😀"))
    assert.are.equal('"a\\"b\\\\c\\n\\r\\t\\b\\f"', json.encode('a"b\\c\n\r\t\b\f'))
    assert.are.equal('"\\u0001\\u001f\\u0000x"', json.encode("\1\31\0x"))
    assert.are.equal('"/"', json.encode("/"))
  end)

  it("escapes and unescapes a special byte at every offset of a long run", function()
    -- strings are scanned eight bytes at a time: put each byte that ends
    -- a plain run at every position of a word, among ASCII and UTF-8 bytes
    local function reference(str) -- RFC 8259's escaping, byte by byte
      return '"' .. str:gsub('[%z\1-\31"\\]', function(c)
        local short = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
                        ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
        return short[c] or ("\\u%04x"):format(c:byte())
      end) .. '"'
    end
    for _, special in ipairs({ '"', "\\", "\n", "\1", "\31", "\0" }) do
      for _, filler in ipairs({ "a", "é", " ", "\127" }) do
        for at = 0, 19 do
          local str = filler:rep(24):sub(1, at) .. special .. ("z"):rep(at % 11)
          local enc = json.encode(str)
          assert.are.equal(reference(str), enc)
          if special ~= "\0" then
            assert.are.equal(str, json.decode(enc))
            local ok, f, t = json.locate('{"k":' .. enc .. ',"n":1}', "n")
            assert.is_true(ok)
            assert.are.equal(1, tonumber(('{"k":' .. enc .. ',"n":1}'):sub(f, t)))
          end
          -- raw, the special byte ends or breaks the string
          local raw, err = json.decode('"' .. str .. '"')
          if special == '"' then assert.is_nil(raw) elseif special ~= "\\" then assert.is_nil(raw, err) end
        end
      end
    end
  end)

  it("refuses NUL inside strings instead of truncating them", function()
    local v, err = json.decode('{"a":"x\\u0000y"}')
    assert.is_nil(v)
    assert.matches("NUL", err)
    assert.matches("byte 8", err)
    -- an escaped backslash followed by u0000 is plain text
    assert.are.equal("\\u0000", json.decode('"\\\\u0000"'))
  end)

  it("keeps integers exact up to 2^53 and prints them without a fraction", function()
    assert.are.equal(9007199254740992, json.decode("9007199254740992"))
    assert.are.equal("9007199254740992", json.encode(2 ^ 53))
    assert.are.equal("-42", json.encode(-42))
    assert.are.equal("[0,1,100000000000]", json.encode({ 0, 1, 1e11 }))
    assert.are.equal("1.5", json.encode(1.5))
    assert.are.equal("0.1", json.encode(0.1))
    assert.are.equal("1e+300", json.encode(1e300))
    assert.are.equal(0.1, json.decode(json.encode(0.1)))
    assert.are.equal(1 / 3, json.decode(json.encode(1 / 3)))
    assert.are.equal(-1.25e-7, json.decode("-1.25e-7"))
  end)

  it("writes short decimals as a person would, and every double so it reads back the same", function()
    assert.are.equal("0.346", json.encode(0.346))
    assert.are.equal("-12.5", json.encode(-12.5))
    assert.are.equal("0.000001", json.encode(1e-6))
    assert.are.equal("123456.789", json.encode(123456.789))
    assert.are.equal("0.30000000000000004", json.encode(0.1 + 0.2))
    -- decimals of every length, and doubles with no short decimal at all
    local seed = 12345
    local function rnd() seed = (seed * 1103515245 + 12345) % 2147483648; return seed end
    for _ = 1, 20000 do
      local digits = rnd() % 9
      local v = (rnd() - 1073741824) / 10 ^ digits
      if rnd() % 3 == 0 then v = v / 7 end
      local s = json.encode(v)
      assert(json.decode(s) == v, s)
      assert(#s <= 24, s)
    end
  end)

  it("reports errors with byte, line and column", function()
    local v, err = json.decode('{"a": 1,\n  "b": }')
    assert.is_nil(v)
    assert.are.equal("invalid JSON at byte 17 (line 2, column 8): syntax error", err)
    assert.matches("unexpected end of input", select(2, json.decode('{"a": [1, 2')))
    assert.matches("trailing characters", select(2, json.decode('{} x')))
    assert.matches("empty input", select(2, json.decode('')))
    assert.is_nil(json.decode("nope"))
    assert.are.same({ 1 }, json.decode("  [1]  \n"))
  end)

  it("limits nesting depth when decoding", function()
    local ok = string.rep("[", 200) .. string.rep("]", 200)
    assert.is_table(json.decode(ok))
    local v, err = json.decode(string.rep("[", 201) .. string.rep("]", 201))
    assert.is_nil(v)
    assert.are.equal("invalid JSON at byte 201 (line 1, column 201): nested deeper than 200 levels", err)
    v, err = json.decode(string.rep("[", 5000) .. string.rep("]", 5000))
    assert.is_nil(v)
    assert.matches("nested deeper than 200", err)
  end)

  it("encodes sequences as arrays and string-keyed tables as objects", function()
    assert.are.equal("[1,2,3]", json.encode({ 1, 2, 3 }))
    assert.are.equal('{"k":"v"}', json.encode({ k = "v" }))
    assert.are.equal('[[],{}]', json.encode({ json.empty_array(), {} }))
    assert.are.equal("true", json.encode(true))
    assert.are.equal('"s"', json.encode("s"))
  end)

  it("refuses mixed keys, sparse arrays, cycles, NaN and functions", function()
    local function fails(v, pat)
      local s, err = json.encode(v)
      assert.is_nil(s)
      assert.matches(pat, err)
    end
    fails({ 1, 2, x = 3 }, "mixed keys")
    fails({ x = 3, [1] = 2 }, "mixed keys")
    fails({ [1] = 1, [3] = 3 }, "sparse")
    fails({ [1.5] = 1 }, "mixed keys")
    fails({ [true] = 1 }, "key of type boolean")
    local t = { a = {} }
    t.a.b = t
    fails(t, "contains itself")
    local arr = {}
    arr[1] = arr
    fails(arr, "contains itself")
    fails(0 / 0, "NaN")
    fails({ x = math.huge }, "NaN or infinity")
    fails({ f = print }, "type function")
    -- the same table twice, side by side, is not a cycle
    local shared_t = { 1 }
    assert.are.equal("[[1],[1]]", json.encode({ shared_t, shared_t }))
  end)

  it("limits nesting depth when encoding", function()
    local deep = {}
    local cur = deep
    for _ = 1, 300 do cur[1] = {}; cur = cur[1] end
    local s, err = json.encode(deep)
    assert.is_nil(s)
    assert.matches("nested deeper than 200", err)
  end)

  it("encodes large values and reuses its buffer safely", function()
    local big = {}
    for i = 1, 20000 do big[i] = { id = i, s = ("x"):rep(10) } end
    local s = assert(json.encode(big))
    assert.are.equal(20000, #json.decode(s))
    assert.are.equal("[1]", json.encode({ 1 }))
  end)
end)

describe("sluice.re", function()
  it("matches with captures, [0] as the whole match", function()
    local m = re.match("key=value; other=1", "(\\w+)=(\\w+)")
    assert.are.equal("key=value", m[0])
    assert.are.equal("key", m[1])
    assert.are.equal("value", m[2])
    assert.is_nil(re.match("abc", "\\d"))
  end)

  it("gives named groups by name and unset groups as false", function()
    local m = re.match("2024-05-06", "(?<y>\\d+)-(?<m>\\d+)-(?<d>\\d+)(?<t>T.*)?")
    assert.are.equal("2024", m.y)
    assert.are.equal("06", m.d)
    assert.are.equal("05", m[2])
    assert.are.equal(false, m.t)
    assert.are.equal(false, m[4])
  end)

  it("honours flags", function()
    assert.is_nil(re.match("HELLO", "hello"))
    assert.are.equal("HELLO", re.match("HELLO", "hello", "i")[0])
    assert.are.equal("b", re.match("a\nb", "^b", "m")[0])
    assert.is_nil(re.match("a\nb", "^b"))
    assert.are.equal("a\nb", re.match("a\nb", "a.b", "s")[0])
    assert.are.equal("ab", re.match("ab", "a b # comment", "x")[0])
    assert.are.equal("é", re.match("café", ".$", "u")[0])
    assert.are.equal(1, #re.match("café", ".$")[0])
    local ok, err = pcall(re.match, "a", "a", "q")
    assert.is_false(ok)
    assert.matches("unknown regex flag 'q'", err, 1, true)
  end)

  it("raises on invalid patterns with the offset and PCRE2's message", function()
    local ok, err = pcall(re.match, "x", "ab(c")
    assert.is_false(ok)
    assert.matches("invalid regex at offset 4: missing closing parenthesis", err, 1, true)
  end)

  it("stops a catastrophic pattern at the match limit", function()
    local ok, err = pcall(re.match, ("a"):rep(30) .. "b", "(a+)+$")
    assert.is_false(ok)
    assert.matches("regex match limit exceeded", err, 1, true)
  end)

  it("searches the valid parts of an invalid UTF-8 subject in utf mode, never refusing it", function()
    -- a policy rule must not be dodged by one bad byte
    assert.is_nil(re.match("\255", ".", "u"))
    assert.are.same({ 5, 10 }, { re.find("ab\255 secret", "secret", "u") })
  end)

  it("knows Unicode words and case in utf mode", function()
    assert.truthy(re.find("mein пароль ist", [[\bпароль\b]], "u"))
    assert.truthy(re.find("GEHEIMSACHE ÜBER", "geheimsache über", "iu"))
  end)

  it("finds like string.find, with init and captures", function()
    assert.are.same({ 7, 11 }, { re.find("hello world", "world") })
    assert.are.same({ 3, 5, "l", "o" }, { re.find("hello", "(l)l(o)") })
    assert.are.same({ 9, 9 }, { re.find("abcabcabc", "c", nil, 7) })
    assert.are.same({ 9, 9 }, { re.find("abcabcabc", "c", nil, -1) })
    assert.is_nil(re.find("abc", "a", nil, 2))
    assert.is_nil(re.find("abc", "a", nil, 10))
    assert.are.same({ 4, 3 }, { re.find("abc", "$") })
  end)

  it("iterates matches with gmatch, empty matches included", function()
    local words = {}
    for m in re.gmatch("one two  three", "(\\w+)") do words[#words + 1] = m[1] end
    assert.are.same({ "one", "two", "three" }, words)
    local seen = {}
    for m in re.gmatch("baaa", "a*") do seen[#seen + 1] = m[0] end
    assert.are.same({ "", "aaa", "" }, seen)
    -- an empty match is retried as non-empty before being skipped
    seen = {}
    for m in re.gmatch("b", "x*|b") do seen[#seen + 1] = m[0] end
    assert.are.same({ "", "b", "" }, seen)
    seen = {}
    for m in re.gmatch("éa", "", "u") do seen[#seen + 1] = m[0] end
    assert.are.equal(3, #seen)
  end)

  it("substitutes with $0..$9, ${n}, ${name} and $$", function()
    assert.are.same({ "hell0 w0rld", 2 }, { re.gsub("hello world", "o", "0") })
    assert.are.same({ "world hello", 1 },
      { re.gsub("hello world", "(\\w+) (\\w+)", "$2 $1") })
    assert.are.same({ "<a>=<1>", 1 },
      { re.gsub("a=1", "(?<k>\\w)=(?<v>\\w)", "<${k}>=<${2}>") })
    assert.are.same({ "[ab]", 1 }, { re.gsub("ab", ".+", "[$0]") })
    assert.are.same({ "$5 $x", 1 }, { re.gsub("5", "\\d", "$$$0 $x") })
    assert.are.same({ "x-x-x", 3 }, { re.gsub("a-b-c", "[a-c]", "x") })
    assert.are.same({ "x-x-c", 2 }, { re.gsub("a-b-c", "[a-c]", "x", nil, 2) })
    assert.are.same({ "-a-b-", 3 }, { re.gsub("ab", "", "-") })
    assert.has_error(function() re.gsub("a", "a", "${nope}") end)
    assert.has_error(function() re.gsub("a", "(a)", "$2") end)
  end)

  it("substitutes from a table looked up by the whole match", function()
    local map = { cat = "dog", bird = false }
    assert.are.same({ "dog bird fish", 3 },
      { re.gsub("cat bird fish", "\\w+", map) })
    assert.are.same({ "n=2", 1 }, { re.gsub("n=1", "\\d", { ["1"] = 2 }) })
  end)

  it("substitutes through a function given the captures", function()
    local out, n = re.gsub("a1 b2 c3", "(?<l>[a-z])(\\d)", function(m)
      if m.l == "b" then return nil end
      return m[2] .. m.l
    end)
    assert.are.equal("1a b2 3c", out)
    assert.are.equal(3, n)
    assert.has_error(function() re.gsub("a", "a", function() return {} end) end)
    assert.has_error(function() re.gsub("a", "a", function() error("boom") end) end, nil)
    local ok, err = pcall(re.gsub, "a", "a", function() error("boom", 0) end)
    assert.is_false(ok)
    assert.are.equal("boom", err)
  end)

  it("survives nested matches and cache churn inside a gsub callback", function()
    local out = re.gsub("x1 x2", "x(\\d)", function(m)
      for i = 1, 600 do re.match("z", "z" .. i .. "?") end
      return re.match(m[1], "(\\d)")[1] .. "!"
    end)
    assert.are.equal("1! 2!", out)
    local it = re.gmatch("a b c", "\\w")
    assert.are.equal("a", it()[0])
    for i = 1, 600 do re.match("z", "q" .. i .. "?") end
    assert.are.equal("b", it()[0])
    assert.are.equal("c", it()[0])
    assert.is_nil(it())
  end)

  it("compiles a pattern once and bounds the cache", function()
    local _, hits0, misses0 = re.cache_stats()
    for _ = 1, 100 do re.match("abc", "^a(b)c$") end
    local _, hits1, misses1 = re.cache_stats()
    assert.is_true(misses1 - misses0 <= 1)
    assert.is_true(hits1 - hits0 >= 99)
    re.match("abc", "^a(b)c$", "i")   -- other flags, other entry
    local _, _, misses2 = re.cache_stats()
    assert.are.equal(misses1 + 1, misses2)
    for i = 1, 1000 do re.match("abc", "pattern" .. i) end
    local entries = re.cache_stats()
    assert.is_true(entries <= 512)
  end)
end)

describe("sluice.hash", function()
  it("computes SHA-256", function()
    assert.are.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
      hash.sha256("abc"))
    assert.are.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
      hash.sha256(""))
    assert.are.equal(32, #hash.sha256_raw("abc"))
    assert.are.equal(hash.sha256("abc"), hash.hex(hash.sha256_raw("abc")))
  end)

  it("computes HMAC-SHA256 (RFC 4231 test cases 1 and 2)", function()
    assert.are.equal("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
      hash.hmac_sha256(("\11"):rep(20), "Hi There"))
    assert.are.equal("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
      hash.hmac_sha256("Jefe", "what do ya want for nothing?"))
    assert.are.equal(hash.hmac_sha256("Jefe", "x"), hash.hex(hash.hmac_sha256_raw("Jefe", "x")))
  end)

  it("compares in constant time, lengths included", function()
    assert.is_true(hash.equal("secret", "secret"))
    assert.is_false(hash.equal("secret", "secreT"))
    assert.is_false(hash.equal("secret", "secret2"))
    assert.is_false(hash.equal("secret2", "secret"))
    assert.is_false(hash.equal("", "x"))
    assert.is_true(hash.equal("", ""))
    assert.is_true(hash.equal("a\0b", "a\0b"))
    assert.is_false(hash.equal("a\0b", "a\0c"))
  end)

  it("encodes hex and base64 (standard and url-safe)", function()
    assert.are.equal("00ff41", hash.hex("\0\255A"))
    local cases = { [""] = "", f = "Zg==", fo = "Zm8=", foo = "Zm9v", foob = "Zm9vYg==" }
    for plain, enc in pairs(cases) do
      assert.are.equal(enc, hash.base64_encode(plain))
      assert.are.equal(plain, hash.base64_decode(enc))
      assert.are.equal(enc:gsub("=", ""), hash.base64url_encode(plain))
      assert.are.equal(plain, hash.base64url_decode((enc:gsub("=", ""))))
      assert.are.equal(plain, hash.base64url_decode(enc))
    end
    assert.are.equal("-_8", hash.base64url_encode("\251\255"))
    assert.are.equal("+/8=", hash.base64_encode("\251\255"))
    assert.are.equal("\251\255", hash.base64url_decode("-_8"))
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    all = table.concat(all)
    assert.are.equal(all, hash.base64_decode(hash.base64_encode(all)))
    assert.are.equal(all, hash.base64url_decode(hash.base64url_encode(all)))
  end)

  it("rejects malformed base64 with nil, err", function()
    for _, bad in ipairs({ "Zm9v!", "Z", "Zg=", "Zg===", "Zh==", "-_8=" }) do
      local v, err = hash.base64_decode(bad)
      assert.is_nil(v, bad)
      assert.are.equal("invalid base64", err)
    end
    assert.is_nil(hash.base64url_decode("+/8"))
  end)
end)

describe("sluice.shared", function()
  it("stores numbers, strings and booleans", function()
    assert.is_true(shared.set("spec:n", 1.5))
    assert.is_true(shared.set("spec:s", "a\0b"))
    assert.is_true(shared.set("spec:b", false))
    assert.are.equal(1.5, shared.get("spec:n"))
    assert.are.equal("a\0b", shared.get("spec:s"))
    assert.are.equal(false, shared.get("spec:b"))
    assert.is_true(shared.set("spec:s", ("x"):rep(1000)))
    assert.are.equal(1000, #shared.get("spec:s"))
    assert.is_true(shared.set("spec:s", nil))
    assert.is_nil(shared.get("spec:s"))
    assert.is_nil(shared.get("spec:missing"))
    assert.has_error(function() shared.set("spec:t", {}) end)
  end)

  it("adds only when the key is absent", function()
    shared.delete("spec:add")
    assert.is_true(shared.add("spec:add", "first"))
    assert.are.same({ false, "exists" }, { shared.add("spec:add", "second") })
    assert.are.equal("first", shared.get("spec:add"))
    assert.is_true(shared.delete("spec:add"))
    assert.is_false(shared.delete("spec:add"))
  end)

  it("increments, creating missing keys from init", function()
    shared.delete("spec:c")
    assert.are.equal(1, shared.incr("spec:c", 1))
    assert.are.equal(3, shared.incr("spec:c", 2))
    shared.delete("spec:c")
    assert.are.equal(15, shared.incr("spec:c", 5, 10, 60))
    assert.is_true(shared.ttl("spec:c") > 59)
    shared.set("spec:str", "x")
    assert.are.same({ nil, "not a number" }, { shared.incr("spec:str", 1) })
  end)

  it("expires entries after their ttl", function()
    assert.is_true(shared.set("spec:ttl", "v", 0.05))
    assert.is_true(shared.ttl("spec:ttl") <= 0.05)
    assert.are.equal(0, (shared.set("spec:forever", 1) and shared.ttl("spec:forever")))
    local deadline = os.clock() + 0.2
    while os.clock() < deadline and shared.get("spec:ttl") do end
    assert.is_nil(shared.get("spec:ttl"))
    assert.are.same({ nil, "not found" }, { shared.ttl("spec:ttl") })
    assert.has_error(function() shared.set("k", 1, -1) end)
  end)

  it("reports bad keys as nil, err", function()
    assert.are.same({ nil, "key too long" }, { shared.set(("k"):rep(1025), 1) })
    assert.are.same({ nil, "empty key" }, { shared.incr("", 1) })
  end)
end)
