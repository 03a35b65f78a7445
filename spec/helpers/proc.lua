-- spec/helpers/proc.lua — start and stop real sluice processes for the
-- end-to-end specs: free loopback ports, temporary config and policy
-- directories, background processes whose exit status is recorded, and
-- teardown that never leaves a process behind.
--
-- SLUICE_WRAPPER (optional) is put in front of every sluice command, e.g.
--   SLUICE_WRAPPER="valgrind --leak-check=full --error-exitcode=99 -q"
-- Start and stop timeouts grow then, and a process whose log shows
-- valgrind errors (or exits 99) fails the spec that stops it.
local socket = require "socket"

local M = {}

M.bin = os.getenv("SLUICE_BIN") or "build/sluice" -- ctest sets it; else run from the repo root
M.wrapper = os.getenv("SLUICE_WRAPPER") or ""
M.wrapped = M.wrapper:match("%S") ~= nil
M.valgrind = M.wrapper:find("valgrind", 1, true) ~= nil
-- How much longer everything takes under the wrapper.
M.slow = M.wrapped and 10 or 1
M.start_timeout = 5 * M.slow
M.stop_timeout = 4 * M.slow

local live = {}   -- every process started and not yet reaped, by pid
local started = 0 -- start order, so teardown stops the newest first

-- ---- small utilities -------------------------------------------------------

function M.sleep(s)
  socket.sleep(s)
end

function M.now()
  return socket.gettime()
end

function M.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

function M.write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

-- Run a shell command, return its exit status (0..255) and its combined
-- stdout and stderr.
function M.run(cmd)
  local out = os.tmpname()
  local ok, how, code = os.execute(cmd .. " >" .. M.quote(out) .. " 2>&1")
  local text = M.read_file(out) or ""
  os.remove(out)
  local status
  if type(ok) == "number" then           -- Lua 5.1 / LuaJIT without 5.2 compat
    status = ok >= 256 and math.floor(ok / 256) or ok
  else
    status = code
  end
  return status, text
end

-- The sluice command line with the optional wrapper in front.
function M.sluice_cmd(args)
  local parts = {}
  if M.wrapped then parts[#parts + 1] = M.wrapper end
  parts[#parts + 1] = M.quote(M.bin)
  for _, a in ipairs(args) do parts[#parts + 1] = M.quote(a) end
  return table.concat(parts, " ")
end

-- Run sluice to completion (check, a run that must fail…): status, output.
-- A command still running after `timeout` seconds (default 10, longer
-- under the wrapper) is killed and reports status 124.
function M.sluice(args, timeout)
  local status, out = M.run("timeout -k 2 " .. math.floor((timeout or 10) * M.slow)
    .. " " .. M.sluice_cmd(args))
  if M.valgrind then
    M.assert_no_valgrind_errors(out, status, "sluice " .. table.concat(args, " "))
  end
  M.assert_no_sanitizer_errors(out, "sluice " .. table.concat(args, " "))
  return status, out
end

local tmpdirs = {} -- removed by stop_all once their processes are gone

function M.tmpdir()
  local n = os.tmpname()
  os.remove(n)
  n = n .. ".sluice"
  os.execute("mkdir -p " .. M.quote(n))
  tmpdirs[#tmpdirs + 1] = n
  return n
end

function M.rmdir(dir)
  if dir and dir:match("^/tmp/") then os.execute("rm -rf " .. M.quote(dir)) end
end

-- A loopback port nobody listens on right now.
-- A port no listener holds now, reserved against the other spec files
-- running in parallel: the kernel may hand the same free port to two of
-- them before either listens on it. A reservation is a directory under
-- PORTS_DIR made with mkdir (atomic), removed by stop_all; ones older than
-- an hour (a killed run) are swept on first use.
local PORTS_DIR = "/tmp/sluice-spec-ports"
local reserved, swept = {}, false

function M.free_port()
  if not swept then
    os.execute("mkdir -p " .. PORTS_DIR .. " && find " .. PORTS_DIR
      .. " -mindepth 1 -maxdepth 1 -mmin +60 -exec rmdir {} + 2>/dev/null")
    swept = true
  end
  for _ = 1, 50 do
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    port = tonumber(port)
    if M.run("mkdir " .. PORTS_DIR .. "/" .. port) == 0 then
      reserved[#reserved + 1] = port
      return port
    end
  end
  error("no free port could be reserved under " .. PORTS_DIR)
end

-- Can a TCP connection be made to host:port now?
function M.port_open(port, host)
  local c = socket.tcp()
  c:settimeout(0.5)
  local ok = c:connect(host or "127.0.0.1", port)
  c:close()
  return ok ~= nil
end

-- ---- YAML for test configs -------------------------------------------------

local function scalar(v)
  if type(v) == "string" then
    if v == "" or v:match("[:#{}%[%],&*?|<>=!%%@`'\"]") or v:match("^%s")
      or v:match("%s$") then
      return '"' .. v:gsub("\\", "\\\\"):gsub('"', '\\"') .. '"'
    end
    return v
  end
  return tostring(v)
end

local function is_list(t)
  return type(t) == "table" and #t > 0
end

local function emit(t, indent, out)
  local pad = string.rep("  ", indent)
  if is_list(t) then
    for _, v in ipairs(t) do
      if type(v) == "table" then
        local sub = {}
        emit(v, indent + 1, sub)
        sub[1] = pad .. "- " .. sub[1]:gsub("^%s+", "")
        for _, l in ipairs(sub) do out[#out + 1] = l end
      else
        out[#out + 1] = pad .. "- " .. scalar(v)
      end
    end
    return
  end
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v = t[k]
    if type(v) == "table" then
      out[#out + 1] = pad .. k .. ":"
      emit(v, indent + 1, out)
    else
      out[#out + 1] = pad .. k .. ": " .. scalar(v)
    end
  end
end

-- A Lua table as YAML (maps with sorted keys, arrays as sequences).
function M.yaml(t)
  local out = {}
  emit(t, 0, out)
  return table.concat(out, "\n") .. "\n"
end

-- Put in a config override to remove that key from the defaults.
M.REMOVE = setmetatable({}, { __tostring = function() return "REMOVE" end })

local function merge(dst, src)
  for k, v in pairs(src or {}) do
    if v == M.REMOVE then
      dst[k] = nil
    elseif type(v) == "table" and type(dst[k]) == "table" and not is_list(v) then
      merge(dst[k], v)
    else
      dst[k] = v
    end
  end
  return dst
end
M.merge = merge

-- ---- processes ---------------------------------------------------------------

-- Start `cmd` (a shell command line) in the background. Its output goes to
-- dir/name.log; the wrapper shell writes the pid to dir/name.pid and, once
-- the process has ended, its exit status to dir/name.status.
function M.spawn(cmd, dir, name)
  local base = dir .. "/" .. name
  local log, pidf, statf = base .. ".log", base .. ".pid", base .. ".status"
  os.remove(pidf)
  os.remove(statf)
  local script = string.format(
    "%s >%s 2>&1 </dev/null & echo $! >%s.tmp; mv %s.tmp %s; wait $!; echo $? >%s.tmp; mv %s.tmp %s",
    cmd, M.quote(log), M.quote(pidf), M.quote(pidf), M.quote(pidf),
    M.quote(statf), M.quote(statf), M.quote(statf))
  os.execute("sh -c " .. M.quote(script) .. " >/dev/null 2>&1 &")
  local deadline = M.now() + 5
  local pid
  while M.now() < deadline do
    local s = M.read_file(pidf)
    if s and s:match("%d+") then
      pid = tonumber(s:match("%d+"))
      break
    end
    M.sleep(0.01)
  end
  assert(pid, "could not start: " .. cmd)
  started = started + 1
  local p = { pid = pid, log = log, status_file = statf, cmd = cmd, name = name,
    seq = started }
  live[pid] = p
  return p
end

-- The exit status once the process has ended, else nil.
function M.exit_status(p)
  if p.status then return p.status end
  local s = M.read_file(p.status_file)
  if s and s:match("%d+") then
    p.status = tonumber(s:match("%d+"))
    live[p.pid] = nil
  end
  return p.status
end

function M.alive(p)
  return M.exit_status(p) == nil
end

function M.signal(p, sig)
  if M.alive(p) then
    os.execute("kill -" .. sig .. " " .. p.pid .. " 2>/dev/null")
  end
end

-- Wait up to `timeout` seconds for the process to end; its status or nil.
function M.wait(p, timeout)
  local deadline = M.now() + (timeout or M.stop_timeout)
  while M.now() < deadline do
    local st = M.exit_status(p)
    if st then return st end
    M.sleep(0.02)
  end
  return M.exit_status(p)
end

function M.log(p)
  return M.read_file(p.log) or ""
end

-- Valgrind reports lines like "==1234== Invalid read of size 4".
function M.valgrind_lines(text)
  local lines = {}
  for line in (text or ""):gmatch("[^\n]+") do
    if line:match("^==%d+==") then lines[#lines + 1] = line end
  end
  return lines
end

-- Memory errors valgrind reports whatever the exit status.
local memory_errors = { "Invalid read", "Invalid write", "Invalid free",
  "uninitialised", "Conditional jump", "Mismatched free", "overlap",
  "Syscall param", "Jump to the invalid address" }

-- Fail when valgrind found errors: --error-exitcode=99 (errors and, with
-- --errors-for-leak-kinds, those leaks), or memory errors in the log of a
-- process that died from a signal (its leak records are noise then: a
-- killed process never freed anything).
function M.assert_no_valgrind_errors(text, status, what)
  local lines = M.valgrind_lines(text)
  local bad = status == 99
  for _, l in ipairs(lines) do
    for _, e in ipairs(memory_errors) do
      if l:find(e, 1, true) then bad = true end
    end
  end
  if bad then
    local shown = {}
    for i = 1, math.min(#lines, 80) do shown[i] = lines[i] end
    error(string.format("valgrind found errors in %s (exit %s):\n%s", what,
      tostring(status), table.concat(shown, "\n")), 2)
  end
end

-- AddressSanitizer, LeakSanitizer and UBSan reports (make test SANITIZE=1)
-- fail the spec that stopped the process, whatever its exit status.
function M.assert_no_sanitizer_errors(text, what)
  text = text or ""
  local hit = text:match("[^\n]*ERROR: %a+Sanitizer[^\n]*") or
              text:match("[^\n]*runtime error:[^\n]*")
  if hit then
    error(string.format("sanitizer report from %s: %s\n%s", what, hit,
      text:sub(1, 4000)), 3)
  end
end

-- SIGTERM, wait, SIGKILL after the timeout. Returns the exit status (137
-- or 143 when killed by a signal, as sh reports it). Under valgrind, errors
-- in the log fail the caller.
function M.stop(p, timeout)
  if not p then return nil end
  if p.stopped then return p.status end
  p.stopped = true
  local t0 = M.now()
  M.signal(p, "TERM")
  local st = M.wait(p, timeout or M.stop_timeout)
  if os.getenv("SPEC_DEBUG") then
    io.stderr:write(string.format("stopped %s: %s after %.3fs\n", p.name,
      tostring(st), M.now() - t0))
  end
  if not st then
    M.signal(p, "KILL")
    st = M.wait(p, 5)
    p.killed = true
  end
  live[p.pid] = nil
  if M.valgrind then
    M.assert_no_valgrind_errors(M.log(p), st, p.name)
  end
  M.assert_no_sanitizer_errors(M.log(p), p.name)
  return st
end

-- Stop every process still running (teardown's safety net) and remove the
-- temporary directories made so far. Errors are collected and raised once
-- all are stopped.
function M.stop_all()
  local errs = {}
  local ps = {}
  for _, p in pairs(live) do ps[#ps + 1] = p end
  -- gateways before the mocks they talk to
  table.sort(ps, function(a, b) return a.seq > b.seq end)
  for _, p in ipairs(ps) do
    local ok, e = pcall(M.stop, p)
    if not ok then errs[#errs + 1] = tostring(e) end
  end
  for _, port in ipairs(reserved) do os.remove(PORTS_DIR .. "/" .. port) end
  reserved = {}
  -- SPEC_KEEP_TMP=1 keeps configs and process logs for a post-mortem.
  if not os.getenv("SPEC_KEEP_TMP") then
    for _, d in ipairs(tmpdirs) do M.rmdir(d) end
    tmpdirs = {}
  end
  if #errs > 0 then error(table.concat(errs, "\n"), 2) end
end

-- Whether process `pid` holds a socket listening on `port` (true when
-- /proc cannot say).
function M.listens(pid, port)
  local inodes, any = {}, false
  for _, table in ipairs({ "/proc/net/tcp", "/proc/net/tcp6" }) do
    for line in (M.read_file(table) or ""):gmatch("[^\n]+") do
      local p, st, inode = line:match("^%s*%d+:%s+%x+:(%x+)%s+%x+:%x+%s+(%x+)%s+%S+%s+%S+%s+%S+%s+%S+%s+%S+%s+(%d+)")
      if p and tonumber(p, 16) == port and st == "0A" then inodes["socket:[" .. inode .. "]"] = true end
      any = any or p ~= nil
    end
  end
  if not any then return true end
  local status, links = M.run("ls -l /proc/" .. pid .. "/fd")
  if status ~= 0 then return false end -- gone (or not ours to read)
  for link in links:gmatch("socket:%[%d+%]") do
    if inodes[link] then return true end
  end
  return false
end

-- Wait until the port accepts connections (or the process died); with a
-- process, until that process is the one listening there.
function M.wait_port(p, port, timeout)
  local deadline = M.now() + (timeout or M.start_timeout)
  while M.now() < deadline do
    if M.port_open(port) and (not p or M.listens(p.pid, port)) then return true end
    if p and not M.alive(p) then
      error(string.format("%s exited with %s before listening on %d:\n%s",
        p.name, tostring(p.status), port, M.log(p)), 2)
    end
    M.sleep(0.02)
  end
  error(string.format("%s did not listen on %d within %ds:\n%s",
    p and p.name or "process", port, timeout or M.start_timeout,
    p and M.log(p) or ""), 2)
end

-- ---- the mock provider ---------------------------------------------------

-- opts: port, tls_cert, tls_key, status, delay_ms, fault, dir, name
function M.mock(opts)
  opts = opts or {}
  local m = { port = opts.port or M.free_port(), dir = opts.dir or M.tmpdir() }
  m.own_dir = opts.dir == nil
  local args = { "mock", "--listen", "127.0.0.1:" .. m.port }
  if opts.tls_cert then
    args[#args + 1] = "--tls-cert"; args[#args + 1] = opts.tls_cert
    args[#args + 1] = "--tls-key"; args[#args + 1] = opts.tls_key
  end
  if opts.status then args[#args + 1] = "--status"; args[#args + 1] = tostring(opts.status) end
  if opts.delay_ms then args[#args + 1] = "--delay-ms"; args[#args + 1] = tostring(opts.delay_ms) end
  if opts.fault then args[#args + 1] = "--fault"; args[#args + 1] = opts.fault end
  m.proc = M.spawn(M.sluice_cmd(args), m.dir, opts.name or ("mock-" .. m.port))
  M.wait_port(m.proc, m.port)
  m.url = (opts.tls_cert and "https://localhost:" or "http://127.0.0.1:") .. m.port
  function m:stop() return M.stop(self.proc) end
  return m
end

-- ---- the gateway -------------------------------------------------------------

-- The test defaults: one worker, small timeouts, quiet logs.
function M.default_config(port)
  return {
    workers = 1,
    listen = { { address = "127.0.0.1:" .. port } },
    policy_dir = "policies",
    limits = { max_body_bytes = "64KiB", max_header_bytes = "8KiB", max_headers = 50 },
    timeouts = {
      header_read = "2s", body_read = "2s", keepalive_idle = "5s",
      upstream_connect = "2s", upstream_first_byte = "5s",
      upstream_idle = "5s", drain = "2s",
    },
    log = { access = "off", level = "warn" },
    -- Plugin time budgets are wall-clock: under the wrapper the default
    -- 100 ms grows like every other timeout.
    lua = M.wrapped and { time_budget = math.floor(100 * M.slow) .. "ms" } or nil,
  }
end

-- A policy with one backend named `name` (default "mock") at `url`.
function M.policy(url, name, extra)
  name = name or "mock"
  local be = merge({ provider = "openai", url = url, region = "local" }, extra)
  return { backends = { [name] = be }, default_backend = name }
end

-- Start a gateway. opts:
--   backend_url  url of the default backend "mock" (unless policy given)
--   policy       table (written as policies/default.yaml) or string
--   config       table merged over default_config (proc.REMOVE removes a key),
--                or function(port, dir) returning that table
--   config_text  the whole sluice.yaml as text (port must be known: opts.port)
--   port, dir, no_wait
function M.gateway(opts)
  opts = opts or {}
  local g = { port = opts.port or M.free_port(), dir = opts.dir or M.tmpdir() }
  g.policy_dir = g.dir .. "/policies"
  os.execute("mkdir -p " .. M.quote(g.policy_dir))
  g.config_path = g.dir .. "/sluice.yaml"
  if opts.config_text then
    M.write_file(g.config_path, opts.config_text)
  else
    local over = opts.config
    if type(over) == "function" then over = over(g.port, g.dir) end
    local cfg = merge(M.default_config(g.port), over)
    M.write_file(g.config_path, M.yaml(cfg))
  end
  function g:write_policy(p, file)
    M.write_file(self.policy_dir .. "/" .. (file or "default.yaml"),
      type(p) == "string" and p or M.yaml(p))
  end
  local pol = opts.policy
  if pol == nil and opts.backend_url then pol = M.policy(opts.backend_url) end
  if pol then g:write_policy(pol) end
  g.proc = M.spawn(M.sluice_cmd({ "run", "-c", g.config_path }), g.dir,
    opts.name or ("sluice-" .. g.port))
  if not opts.no_wait then M.wait_port(g.proc, g.port) end
  function g:stop(timeout) return M.stop(self.proc, timeout) end
  function g:signal(sig) return M.signal(self.proc, sig) end
  function g:log() return M.log(self.proc) end
  return g
end


-- ---- shared test fixtures ------------------------------------------------------

-- A gateway key's hash as operators make it: with the shipped script.
function M.hash_key(key)
  local st, out = M.run("printf %s " .. M.quote(key) .. " | scripts/hash-key.sh")
  assert(st == 0, out)
  return (assert(out:match("^(sha256:%x+)\n$"), out))
end

-- The client SDKs of spec/sdk (npm `openai`, `@anthropic-ai/sdk`),
-- installed on first use. Specs run in parallel: one installs under a lock,
-- the others wait; a marker written after a complete install is what
-- counts, never a half-filled node_modules.
M.SDK_DIR = "spec/sdk"
function M.ensure_sdks()
  local marker = M.SDK_DIR .. "/node_modules/.sluice-installed"
  local f = io.open(marker)
  if f then f:close() return end
  local status, out = M.run("cd " .. M.SDK_DIR .. " && flock .npm.lock sh -c "
    .. "'test -f node_modules/.sluice-installed || "
    .. "(timeout 300 npm install --no-audit --no-fund && touch node_modules/.sluice-installed)'")
  assert(status == 0, "npm install failed:\n" .. out)
end

return M
