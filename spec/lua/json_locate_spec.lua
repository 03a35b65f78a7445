-- json.locate: where top-level members' values lie, for code that splices a
-- document instead of decoding and re-encoding it — and nil whenever a
-- splice could be read differently than the decoded value.
local json = require "sluice.json"

local function value(s, key)
  local ok, from, to = json.locate(s, key)
  if not ok then return nil end
  if not from then return false end
  return s:sub(from, to)
end

describe("json.locate", function()
  it("gives the byte range of each top-level member's value", function()
    local s = '{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"n":1}'
    local ok, mf, mt, gf, gt, nf, nt = json.locate(s, "model", "messages", "n")
    assert.is_true(ok)
    assert.equals('"gpt-4o"', s:sub(mf, mt))
    assert.equals('[{"role":"user","content":"hi"}]', s:sub(gf, gt))
    assert.equals("1", s:sub(nf, nt))
  end)

  it("says false for a member the object does not have", function()
    local ok, f, t = json.locate('{"a":1}', "model")
    assert.is_true(ok)
    assert.is_false(f)
    assert.is_false(t)
  end)

  it("finds only top-level members, not keys of nested objects", function()
    local s = '{"tools":[{"model":"inner"}],"meta":{"model":"x"}}'
    assert.is_false(value(s, "model"))
    s = '{"meta":{"model":"x"},"model":"outer"}'
    assert.equals('"outer"', value(s, "model"))
  end)

  it("is not fooled by the key's text inside a string", function()
    local s = '{"content":"say \\"model\\":\\"evil\\"","model":"m"}'
    assert.equals('"m"', value(s, "model"))
  end)

  it("keeps whitespace around values outside the range", function()
    local s = ' { "model" :  "m"  , "x" : [ 1 , 2 ] } '
    assert.equals('"m"', value(s, "model"))
    assert.equals("[ 1 , 2 ]", value(s, "x"))
  end)

  it("refuses a document with a repeated key, at any depth", function()
    assert.is_nil(value('{"model":"a","model":"b"}', "model"))
    assert.is_nil(value('{"model":"a","messages":[{"role":"user","role":"system"}]}', "model"))
  end)

  it("refuses keys written with escapes (they could spell a key twice)", function()
    assert.is_nil(value('{"model":"a","mod\\u0065l":"b"}', "model"))
    assert.is_nil(value('{"m\\"x":1,"model":"a"}', "model"))
  end)

  it("accepts escapes in values", function()
    assert.equals('"caf\\u00e9 \\"x\\""', value('{"model":"caf\\u00e9 \\"x\\""}', "model"))
  end)

  it("refuses what the decoder refuses", function()
    for _, bad in ipairs({ '{"model":"a"', '{"model":"a",}', '{"model":01}', '{"model":"a"} x',
                           '{"model":"\\u0000"}', '{"model":"\\ud800"}', '{"model":tru}',
                           '{"model":"a\nb"}', '{"model":-}', '{"model":1.}', "" }) do
      assert.is_nil(value(bad, "model"), bad)
      assert.is_nil(json.decode(bad), bad)
    end
  end)

  it("refuses anything but an object at the top", function()
    assert.is_nil(value('["model"]', "model"))
    assert.is_nil(value('"model"', "model"))
  end)

  it("refuses objects with more keys than it compares", function()
    local parts = {}
    for i = 1, 65 do parts[i] = ('"k%d":%d'):format(i, i) end
    assert.is_nil(value("{" .. table.concat(parts, ",") .. "}", "k1"))
    parts[65] = nil
    assert.equals("1", value("{" .. table.concat(parts, ",") .. "}", "k1"))
  end)

  it("refuses nesting deeper than the decoder takes", function()
    local function nest(n) return ('{"a":'):rep(n) .. "1" .. ("}"):rep(n) end
    assert.is_nil(value(nest(201), "a"))
    assert.is_nil(json.decode(nest(201)))
    assert.is_truthy(value(nest(200), "a"))
    assert.is_truthy(json.decode(nest(200)))
  end)
end)
