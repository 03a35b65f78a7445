-- sse.lua — a minimal SSE client for bench/run.sh's streaming case.
--
--   lua bench/sse.lua HOST PORT MODE COUNT [CHUNKS] [DELAY_MS]
--
-- MODE "ttfe": COUNT sequential streams of CHUNKS events, DELAY_MS apart
-- (the mock's x-mock-chunks / x-mock-chunk-delay-ms); for each, prints
--   SSE ttfe_us=N span_us=N events=N
-- ttfe_us is from connect() to the first complete "data:" line, span_us
-- from there to the end of the stream. A gateway that buffered the stream
-- would show ttfe_us close to CHUNKS*DELAY_MS instead of well under 1 ms.
--
-- MODE "tput": COUNT sequential streams of CHUNKS events sent back to back;
-- for each, prints
--   SSE total_us=N events=N bytes=N
-- bytes is the SSE payload (chunked framing removed). The clock covers the
-- whole exchange; the body is read with one receive("*a") (Connection:
-- close) so the client spends as little per event as possible.
--
-- Needs LuaSocket (Debian lua-socket) for any Lua >= 5.1.

local socket = require("socket")

local host, port, mode = arg[1], tonumber(arg[2]), arg[3]
local count = tonumber(arg[4] or "10")
local chunks = tonumber(arg[5] or "8")
local delay = tonumber(arg[6] or "0")

local body = '{"model":"gpt-4o-mini","stream":true,"messages":['
  .. '{"role":"user","content":"Stream a short answer, please."}]}'

local function request()
  return table.concat({
    "POST /v1/chat/completions HTTP/1.1",
    "Host: " .. host .. ":" .. port,
    "Content-Type: application/json",
    "Accept: text/event-stream",
    "Authorization: Bearer sk-bench-0000000000000000",
    "x-mock-chunks: " .. chunks,
    "x-mock-chunk-delay-ms: " .. delay,
    "Connection: close",
    "Content-Length: " .. #body,
    "", body }, "\r\n")
end

local function fail(msg)
  io.stderr:write("sse.lua: " .. msg .. "\n")
  os.exit(1)
end

-- Read the status line and headers; return whether the body is chunked.
local function read_head(s)
  local status = s:receive("*l")
  if not status or not status:match("^HTTP/1%.%d 200") then
    fail("bad status: " .. tostring(status))
  end
  local chunked = false
  while true do
    local l, err = s:receive("*l")
    if not l then fail("head: " .. tostring(err)) end
    if l == "" then return chunked end
    if l:lower():match("^transfer%-encoding:%s*chunked") then chunked = true end
  end
end

-- Undo chunked transfer coding on a whole body held in memory.
local function dechunk(raw)
  local out, pos = {}, 1
  while true do
    local e = raw:find("\r\n", pos, true)
    if not e then break end
    local n = tonumber(raw:sub(pos, e - 1):match("^%x+"), 16)
    if not n or n == 0 then break end
    out[#out + 1] = raw:sub(e + 2, e + 1 + n)
    pos = e + 2 + n + 2
  end
  return table.concat(out)
end

local function count_events(payload)
  local _, n = payload:gsub("\n\n", "")
  return n
end

local function connect(t0)
  local s = socket.tcp()
  s:settimeout(30)
  s:setoption("tcp-nodelay", true)
  local ok, err = s:connect(host, port)
  if not ok then fail("connect: " .. tostring(err)) end
  s:send(request())
  return s
end

local function ttfe()
  local t0 = socket.gettime()
  local s = connect(t0)
  read_head(s)
  local first, events = nil, 0
  while true do
    local l, err = s:receive("*l")
    if not l then
      if err == "closed" then break end
      fail("body: " .. tostring(err))
    end
    if l:sub(1, 5) == "data:" then
      events = events + 1
      if not first then first = socket.gettime() end
    end
  end
  local t1 = socket.gettime()
  s:close()
  if not first then fail("no event") end
  io.write(string.format("SSE ttfe_us=%d span_us=%d events=%d\n",
    (first - t0) * 1e6, (t1 - first) * 1e6, events))
end

local function tput()
  local t0 = socket.gettime()
  local s = connect(t0)
  local chunked = read_head(s)
  local raw, err = s:receive("*a")
  local t1 = socket.gettime()
  s:close()
  if not raw then fail("body: " .. tostring(err)) end
  local payload = chunked and dechunk(raw) or raw
  io.write(string.format("SSE total_us=%d events=%d bytes=%d\n",
    (t1 - t0) * 1e6, count_events(payload), #payload))
end

for _ = 1, count do
  if mode == "ttfe" then ttfe() elseif mode == "tput" then tput()
  else fail("mode is ttfe or tput") end
end
