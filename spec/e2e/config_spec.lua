-- End-to-end: a bad sluice.yaml or policy stops `sluice run` before it
-- serves, with "file:line: key: reason"; `sluice check` says the same and
-- answers with its exit status.
local proc = require "spec.helpers.proc"

-- The repository: where the shipped sluice.yaml lives (specs run from it).
local REPO = os.getenv("SLUICE_HOME")
  or (io.open("sluice.yaml") and io.open("policies/default.yaml") and ".")
  or "/work/main"

describe("sluice configuration errors", function()
  local dir, port

  setup(function()
    dir = proc.tmpdir()
    os.execute("mkdir -p " .. proc.quote(dir .. "/policies"))
    port = proc.free_port()
  end)

  teardown(function()
    proc.stop_all()
    proc.rmdir(dir)
  end)

  local function policy(text)
    os.execute("rm -f " .. proc.quote(dir .. "/policies") .. "/*")
    proc.write_file(dir .. "/policies/default.yaml", text)
  end

  local good_policy = table.concat({
    "backends:",
    "  mock:",
    "    provider: openai",
    "    url: http://127.0.0.1:1",
    "    region: local",
    "default_backend: mock",
  }, "\n") .. "\n"

  -- sluice.yaml with `lines` (a list) after a valid listen section.
  local function config(lines)
    local all = {
      "workers: 1",                                  -- line 1
      "listen:",                                     -- line 2
      "  - address: 127.0.0.1:" .. port,             -- line 3
      "policy_dir: policies",                        -- line 4
      "log:",                                        -- line 5
      "  access: off",                               -- line 6
    }
    for _, l in ipairs(lines or {}) do all[#all + 1] = l end
    return proc.write_file(dir .. "/sluice.yaml", table.concat(all, "\n") .. "\n")
  end

  -- `sluice run` must refuse to start: returns its output.
  local function run_refuses(path)
    local st, out = proc.sluice({ "run", "-c", path })
    assert.are_not.equal(0, st, "sluice run started:\n" .. out)
    assert.are_not.equal(124, st, "sluice run kept running:\n" .. out)
    assert.is_false(proc.port_open(port), "something listens on the port")
    return out, st
  end

  local function assert_line(out, expected)
    assert.is_truthy(out:find(expected, 1, true),
      "expected «" .. expected .. "» in:\n" .. out)
  end

  before_each(function()
    policy(good_policy)
  end)

  it("starts nothing and names file, line and key for a bad duration", function()
    local path = config({ "timeouts:", "  header_read: 1s", "  upstream_connect: soon" })
    local out, st = run_refuses(path)
    assert.are.equal(2, st)
    assert_line(out, path .. ":9: timeouts.upstream_connect: expected a duration")
  end)

  it("refuses an unknown top-level key, naming the key's own line", function()
    local path = config({ "limts:", "  max_headers: 10" })
    local out = run_refuses(path)
    assert_line(out, path .. ":7: limts: unknown key")
  end)

  it("refuses an unknown top-level key with a plain value", function()
    local path = config({ "listne: 127.0.0.1:1" })
    local out = run_refuses(path)
    assert_line(out, path .. ":7: listne: unknown key")
  end)

  it("refuses an unknown key inside a section", function()
    local path = config({ "limits:", "  max_body_bytes: 1MiB", "  max_body: 1MiB" })
    local out = run_refuses(path)
    assert_line(out, path .. ":9: limits.max_body: unknown key")
  end)

  it("refuses a listen address without a port", function()
    local path = proc.write_file(dir .. "/sluice.yaml", table.concat({
      "workers: 1", "listen:", "  - address: localhost", "policy_dir: policies" }, "\n") .. "\n")
    local out = run_refuses(path)
    assert_line(out, path .. ":3: listen[0]: expected host:port, got 'localhost'")
  end)

  it("refuses a listen port out of range", function()
    local path = proc.write_file(dir .. "/sluice.yaml", table.concat({
      "workers: 1", "listen:", "  - address: 127.0.0.1:99999", "policy_dir: policies" }, "\n") .. "\n")
    local out = run_refuses(path)
    assert_line(out, path .. ":3: listen[0]: expected host:port")
  end)

  it("refuses a configuration without a listener", function()
    local path = proc.write_file(dir .. "/sluice.yaml", "workers: 1\npolicy_dir: policies\n")
    local out = run_refuses(path)
    assert_line(out, "listen: at least one listener is required")
  end)

  it("refuses a bad size", function()
    local path = config({ "limits:", "  max_body_bytes: lots" })
    local out = run_refuses(path)
    assert_line(out, path .. ":8: limits.max_body_bytes: expected a size like 64KiB or 8MiB")
  end)

  it("refuses a worker count out of range", function()
    local path = proc.write_file(dir .. "/sluice.yaml", table.concat({
      "workers: 0", "listen:", "  - address: 127.0.0.1:" .. port }, "\n") .. "\n")
    local out = run_refuses(path)
    assert_line(out, path .. ":1: workers: expected a whole number from 1 to 256")
  end)

  it("refuses YAML that does not parse, naming file and line", function()
    local path = config({ "limits:", "  max_headers: [1, 2" })
    local out = run_refuses(path)
    assert.is_truthy(out:find(path .. ":%d+:"), out)
  end)

  it("refuses a policy backend with an unknown key", function()
    policy(table.concat({
      "backends:",
      "  mock:",
      "    url: http://127.0.0.1:1",
      "    colour: blue",
      "default_backend: mock",
    }, "\n") .. "\n")
    local out = run_refuses(config())
    assert_line(out, dir .. "/policies/default.yaml:4: backends.mock.colour: unknown key")
  end)

  it("refuses a backend url without a scheme", function()
    policy("backends:\n  mock:\n    url: 127.0.0.1:8081\n")
    local out = run_refuses(config())
    assert_line(out, dir .. "/policies/default.yaml:3: backends.mock.url: must start with http:// or https://")
  end)

  it("refuses a backend url that carries credentials", function()
    policy("backends:\n  mock:\n    url: https://user:secret@example.com\n")
    local out = run_refuses(config())
    assert_line(out, dir .. "/policies/default.yaml:3: backends.mock.url: must not carry credentials")
    assert.is_nil(out:find("secret", 1, true), "the error repeats the credentials")
  end)

  it("refuses a default_backend that names no backend", function()
    policy(good_policy:gsub("default_backend: mock", "default_backend: nope"))
    local out = run_refuses(config())
    assert_line(out, dir .. "/policies/default.yaml:6: default_backend: no backend named 'nope'")
  end)

  it("refuses a policy directory that does not exist", function()
    local path = proc.write_file(dir .. "/sluice.yaml", table.concat({
      "workers: 1", "listen:", "  - address: 127.0.0.1:" .. port,
      "policy_dir: no-such-dir" }, "\n") .. "\n")
    local out = run_refuses(path)
    assert_line(out, "no-such-dir: cannot open policy directory")
  end)

  describe("sluice check", function()
    it("accepts the shipped configuration and policy", function()
      local where = REPO
      if proc.wrapped then
        -- Plugin time budgets are wall-clock and the shipped 100 ms cannot
        -- hold under valgrind: check the same files with it scaled.
        where = proc.tmpdir()
        proc.write_file(where .. "/sluice.yaml", proc.read_file(REPO .. "/sluice.yaml")
          .. "\nlua:\n  time_budget: " .. math.floor(100 * proc.slow) .. "ms\n")
        local abs = REPO:sub(1, 1) == "/" and REPO or io.popen("pwd"):read("*l") .. "/" .. REPO
        os.execute("ln -s " .. proc.quote(abs .. "/policies") .. " "
          .. proc.quote(where .. "/policies"))
      end
      local st, out = proc.run("cd " .. proc.quote(where) .. " && "
        .. proc.sluice_cmd({ "check", "-c", "sluice.yaml" }))
      assert.are.equal(0, st, out)
      assert.is_truthy(out:find("policy [^\n]*policies: ok[^\n]*%(1 backend"), out)
      assert_line(out, "config sluice.yaml: ok")
    end)

    it("accepts a valid policy directory given alone", function()
      local st, out = proc.sluice({ "check", dir .. "/policies" })
      assert.are.equal(0, st, out)
      assert_line(out, "policy " .. dir .. "/policies: ok")
      assert.is_truthy(out:find("(1 backend", 1, true), out)
    end)

    it("exits 2 and names the error for a broken policy directory", function()
      policy("backends:\n  mock:\n    url: ftp://127.0.0.1:1\n")
      local st, out = proc.sluice({ "check", dir .. "/policies" })
      assert.are.equal(2, st, out)
      assert_line(out, dir .. "/policies/default.yaml:3: backends.mock.url: must start with http:// or https://")
    end)

    it("exits 2 for a broken sluice.yaml", function()
      local path = config({ "timeouts:", "  drain: forever" })
      local st, out = proc.sluice({ "check", "-c", path })
      assert.are.equal(2, st, out)
      assert_line(out, path .. ":8: timeouts.drain: expected a duration")
    end)
  end)
end)
