-- redact_quality_spec.lua — how well the redact plugin finds each class on
-- a labelled corpus (spec/fixtures/redact/corpus.txt): every built-in class
-- must reach recall >= 0.98 and precision >= 0.95. The corpus holds real
-- shapes of each class and the look-alikes a prompt is full of (invalid
-- Luhn numbers, versions, dates, order numbers, placeholder keys), each
-- line run through the real plugin in mask mode; the per-class table is
-- printed so a change that trades one class for another shows.
local t = require "sluice.test"

local CORPUS = "spec/fixtures/redact/corpus.txt"
local BUILTIN = { "EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "SSN", "IPV4", "OPENAI_KEY",
  "ANTHROPIC_KEY", "GITHUB_TOKEN", "GOOGLE_API_KEY", "SLACK_TOKEN", "AWS_ACCESS_KEY",
  "JWT", "PRIVATE_KEY" }

-- A corpus line: the text the plugin sees, and the values it must find.
local function parse(line)
  local expected = {}
  local text = line:gsub("%[%[([A-Z0-9_]+):(.-)%]%]", function(class, value)
    value = value:gsub("\\n", "\n")
    expected[#expected + 1] = { class = class, value = value }
    return value
  end)
  return (text:gsub("\\n", "\n")), expected
end

-- What the plugin replaced: the masked output split into literal text and
-- [CLASS_n] placeholders, lined up against the original text.
local function detections(original, masked)
  local segs, pos = {}, 1
  for s, class, e in masked:gmatch("()%[([A-Z0-9_]+)_%d+%]()") do
    segs[#segs + 1] = { lit = masked:sub(pos, s - 1) }
    segs[#segs + 1] = { class = class }
    pos = e
  end
  segs[#segs + 1] = { lit = masked:sub(pos) }
  local found, at = {}, 1
  for i, seg in ipairs(segs) do
    if seg.lit then
      assert(original:sub(at, at + #seg.lit - 1) == seg.lit,
        "masked text does not line up with the original: " .. masked)
      at = at + #seg.lit
    else
      local nxt = segs[i + 1].lit
      local stop
      if i + 1 == #segs then
        stop = #original - #nxt
      else
        stop = assert(original:find(nxt, at + 1, true), "cannot line up: " .. masked) - 1
      end
      found[#found + 1] = { class = seg.class, value = original:sub(at, stop) }
      at = stop + 1
    end
  end
  return found
end

describe("redact quality on the labelled corpus", function()
  local chain = t.chain({ { name = "redact", config = {} } })
  local stats = {}
  local function stat(class)
    local s = stats[class]
    if not s then s = { tp = 0, fp = 0, fn = 0 }; stats[class] = s end
    return s
  end
  local lines, failures = 0, {}

  for line in assert(io.open(CORPUS)):lines() do
    if line:match("%S") and not line:match("^#") then
      lines = lines + 1
      local text, expected = parse(line)
      local res = t.request(chain, { json = { model = "m",
        messages = { { role = "user", content = text } } } })
      assert(res.action == "ok", res.message)
      local out = res.body and require("sluice.json").decode(res.body).messages[1].content or text
      local found = detections(text, out)
      local used = {}
      for _, f in ipairs(found) do
        local hit = false
        for i, e in ipairs(expected) do
          if not used[i] and e.class == f.class and e.value == f.value then
            used[i], hit = true, true
            break
          end
        end
        if hit then
          stat(f.class).tp = stat(f.class).tp + 1
        else
          stat(f.class).fp = stat(f.class).fp + 1
          failures[#failures + 1] = ("false %s %q in: %s"):format(f.class, f.value, text)
        end
      end
      for i, e in ipairs(expected) do
        if not used[i] then
          stat(e.class).fn = stat(e.class).fn + 1
          failures[#failures + 1] = ("missed %s %q in: %s"):format(e.class, e.value, text)
        end
      end
    end
  end

  local function ratio(a, b) return b == 0 and 1 or a / b end

  it("has at least 200 samples and positives for every built-in class", function()
    assert.is_true(lines >= 200, "corpus has " .. lines .. " samples")
    for _, class in ipairs(BUILTIN) do
      local s = stat(class)
      assert.is_true(s.tp + s.fn >= 5, class .. " has fewer than 5 positives")
    end
  end)

  it("reaches recall >= 0.98 and precision >= 0.95 for every built-in class", function()
    local rows = { ("%-16s %4s %4s %4s %9s %7s"):format("class", "tp", "fp", "fn", "precision", "recall") }
    local bad = {}
    for _, class in ipairs(BUILTIN) do
      local s = stat(class)
      local p, r = ratio(s.tp, s.tp + s.fp), ratio(s.tp, s.tp + s.fn)
      rows[#rows + 1] = ("%-16s %4d %4d %4d %9.3f %7.3f"):format(class, s.tp, s.fp, s.fn, p, r)
      if p < 0.95 or r < 0.98 then bad[#bad + 1] = class end
    end
    print("\nredact corpus: " .. lines .. " samples\n" .. table.concat(rows, "\n"))
    if #failures > 0 then print(table.concat(failures, "\n")) end
    assert.same({}, bad)
  end)
end)
