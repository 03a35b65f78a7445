-- spec/helpers/http.lua — a small HTTP/1.1 client over luasocket for the
-- end-to-end specs. It sends exactly the bytes it is given (so specs can
-- send malformed requests), reads responses with content-length, chunked
-- or close-delimited framing, keeps connections open for keep-alive and
-- pipelining, reads SSE events as they arrive with timestamps, and tells
-- whether the server closed the connection.
local socket = require "socket"

local M = {}

M.default_timeout = 10

local Conn = {}
Conn.__index = Conn

-- Open a connection to 127.0.0.1:port.
function M.connect(port, opts)
  opts = opts or {}
  local s = socket.tcp()
  s:settimeout(opts.timeout or 5)
  local ok, err = s:connect(opts.connect_host or "127.0.0.1", port)
  if not ok then return nil, err end
  s:setoption("tcp-nodelay", true)
  return setmetatable({ sock = s, buf = "", port = port, eof = false,
    timeout = opts.timeout or M.default_timeout }, Conn)
end

function Conn:send(data)
  self.sock:settimeout(self.timeout)
  local i = 1
  while i <= #data do
    local n, err, last = self.sock:send(data, i)
    if not n then
      return nil, err, (last or i - 1)
    end
    i = n + 1
  end
  return true
end

-- Read whatever arrives within `timeout` seconds into the buffer. Returns
-- true when bytes came, nil and "timeout" or "closed" otherwise.
function Conn:fill(timeout)
  if self.eof then return nil, "closed" end
  local deadline = socket.gettime() + (timeout or self.timeout)
  while true do
    local left = deadline - socket.gettime()
    if left < 0 then left = 0 end
    if not self.sock:dirty() then
      local r = socket.select({ self.sock }, nil, left)
      if #r == 0 then
        if socket.gettime() >= deadline then return nil, "timeout" end
      end
    end
    self.sock:settimeout(0)
    local data, err, partial = self.sock:receive(65536)
    data = data or partial
    if data and #data > 0 then
      self.buf = self.buf .. data
      if err == "closed" then self.eof = true end
      return true
    end
    if err == "closed" then
      self.eof = true
      return nil, "closed"
    end
    if err ~= "timeout" then
      self.eof = true
      return nil, err
    end
    if socket.gettime() >= deadline then return nil, "timeout" end
  end
end

-- Take n bytes from the buffer, reading more as needed.
function Conn:take(n, deadline)
  while #self.buf < n do
    local ok, err = self:fill(math.max(0, deadline - socket.gettime()))
    if not ok then return nil, err end
  end
  local s = self.buf:sub(1, n)
  self.buf = self.buf:sub(n + 1)
  return s
end

-- Take up to and including `sep` (returned without it).
function Conn:take_until(sep, deadline)
  while true do
    local i = self.buf:find(sep, 1, true)
    if i then
      local s = self.buf:sub(1, i - 1)
      self.buf = self.buf:sub(i + #sep)
      return s
    end
    local ok, err = self:fill(math.max(0, deadline - socket.gettime()))
    if not ok then return nil, err end
  end
end

local function parse_head(head)
  local lines = {}
  for l in (head .. "\r\n"):gmatch("(.-)\r\n") do lines[#lines + 1] = l end
  local version, status, reason = lines[1]:match("^HTTP/(%d%.%d) (%d%d%d) ?(.*)$")
  if not version then return nil, "bad status line: " .. lines[1] end
  local res = { version = version, status = tonumber(status), reason = reason,
    headers = {}, header_list = {}, raw_head = head }
  for i = 2, #lines do
    local name, value = lines[i]:match("^([^:]+):%s*(.-)%s*$")
    if name then
      local lname = name:lower()
      res.header_list[#res.header_list + 1] = { lname, value }
      if res.headers[lname] then
        res.headers[lname] = res.headers[lname] .. ", " .. value
      else
        res.headers[lname] = value
      end
    end
  end
  return res
end

-- Read a response head. Returns the response table, or nil and "closed"
-- (nothing more came) or "timeout".
function Conn:read_head(timeout)
  local deadline = socket.gettime() + (timeout or self.timeout)
  local head, err = self:take_until("\r\n\r\n", deadline)
  if not head then return nil, err end
  local res, perr = parse_head(head)
  if not res then return nil, perr end
  res.t_head = socket.gettime()
  return res
end

-- Body framing of res: "none", "chunked", "length" or "close".
local function framing(res, method)
  if method == "HEAD" or res.status == 204 or res.status == 304
    or (res.status >= 100 and res.status < 200) then
    return "none"
  end
  local te = res.headers["transfer-encoding"]
  if te and te:lower():find("chunked", 1, true) then return "chunked" end
  if res.headers["content-length"] then return "length" end
  return "close"
end

-- Read the body of res incrementally, calling on_data(bytes, time) for
-- every piece as it arrives. Sets res.body, res.complete (the framing said
-- the body ended) and res.err ("closed", "timeout", "bad chunk").
-- Hand `n` body bytes to got(); returns how many never arrived (setting
-- res.err), 0 when all did.
local function read_exact(self, n, deadline, got, res)
  local left = n
  while left > 0 do
    if #self.buf == 0 then
      local ok, err = self:fill(math.max(0, deadline - socket.gettime()))
      if not ok then res.err = err; break end
    end
    local k = math.min(left, #self.buf)
    got(self.buf:sub(1, k))
    self.buf = self.buf:sub(k + 1)
    left = left - k
  end
  return left
end

function Conn:read_body(res, opts)
  opts = opts or {}
  local deadline = socket.gettime() + (opts.timeout or self.timeout)
  local parts = {}
  local function got(s)
    if #s == 0 then return end
    parts[#parts + 1] = s
    if opts.on_data then opts.on_data(s, socket.gettime()) end
  end
  local mode = framing(res, opts.method)
  res.framing = mode
  res.complete = false
  if mode == "none" then
    res.complete = true
  elseif mode == "length" then
    res.complete = read_exact(self, tonumber(res.headers["content-length"]),
      deadline, got, res) == 0
  elseif mode == "chunked" then
    while true do
      local line, err = self:take_until("\r\n", deadline)
      if not line then res.err = err; break end
      local size = tonumber(line:match("^%x+"), 16)
      if not size then res.err = "bad chunk"; break end
      if size == 0 then
        -- trailers until an empty line
        local ok = true
        while true do
          local t, e2 = self:take_until("\r\n", deadline)
          if not t then res.err = e2; ok = false; break end
          if t == "" then break end
        end
        res.complete = ok
        break
      end
      if read_exact(self, size, deadline, got, res) > 0 then break end
      local crlf, e3 = self:take(2, deadline)
      if crlf ~= "\r\n" then res.err = e3 or "bad chunk"; break end
    end
  else -- close-delimited
    while true do
      if #self.buf > 0 then
        got(self.buf)
        self.buf = ""
      end
      local ok, err = self:fill(math.max(0, deadline - socket.gettime()))
      if not ok then
        if err == "closed" then res.complete = true else res.err = err end
        break
      end
    end
  end
  res.body = table.concat(parts)
  return res
end

-- Read a full response. opts: method (for HEAD), timeout, on_data,
-- keep_100 (return a 100 Continue instead of skipping it).
function Conn:read_response(opts)
  opts = opts or {}
  while true do
    local res, err = self:read_head(opts.timeout)
    if not res then return nil, err end
    if res.status == 100 and not opts.keep_100 then
      res = nil
    else
      if res.status >= 100 and res.status < 200 then
        res.body = ""
        return res
      end
      return self:read_body(res, opts)
    end
  end
end

-- Did the server close the connection? Waits up to `timeout` seconds for
-- the end of stream. Returns true when closed, false when still open.
-- Any bytes that arrive meanwhile stay in the buffer.
function Conn:closed(timeout)
  local deadline = socket.gettime() + (timeout or 1)
  while true do
    if self.eof then return true end
    local ok, err = self:fill(math.max(0, deadline - socket.gettime()))
    if not ok then
      if err == "timeout" then return false end
      return true -- closed or reset
    end
  end
end

function Conn:close()
  if self.sock then self.sock:close() end
  self.sock = nil
end

-- Read SSE events of a streamed response as they arrive. Returns a list of
-- { data = "...", t = arrival time } plus the response (with .complete).
function Conn:read_sse(res, opts)
  opts = opts or {}
  local events, pending = {}, ""
  local on = opts.on_event
  self:read_body(res, { timeout = opts.timeout, on_data = function(s, t)
    pending = pending .. s
    while true do
      local i, j = pending:find("\r?\n\r?\n")
      if not i then break end
      local block = pending:sub(1, i - 1)
      pending = pending:sub(j + 1)
      local data = {}
      for line in (block .. "\n"):gmatch("(.-)\r?\n") do
        local d = line:match("^data: ?(.*)$")
        if d then data[#data + 1] = d end
      end
      local ev = { data = table.concat(data, "\n"), raw = block, t = t }
      events[#events + 1] = ev
      if on then on(ev) end
    end
  end })
  return events, res
end

-- ---- building requests ------------------------------------------------------

-- headers: a list of { name, value } (order and duplicates kept) or a map.
function M.build(method, path, headers, body)
  local lines = { string.format("%s %s HTTP/1.1", method, path) }
  local list = {}
  if headers and #headers > 0 then
    list = headers
  elseif headers then
    local keys = {}
    for k in pairs(headers) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do list[#list + 1] = { k, headers[k] } end
  end
  for _, h in ipairs(list) do lines[#lines + 1] = h[1] .. ": " .. h[2] end
  return table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")
end

-- A typical request: adds host, and content-length for a body.
-- opts: method, path, headers (map or list), body, host, close (bool)
function M.request_bytes(opts)
  local method = opts.method or (opts.body and "POST" or "GET")
  local list = { { "host", opts.host or "localhost" } }
  local h = opts.headers or {}
  if #h > 0 then
    for _, x in ipairs(h) do list[#list + 1] = x end
  else
    local keys = {}
    for k in pairs(h) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do list[#list + 1] = { k, h[k] } end
  end
  if opts.body then list[#list + 1] = { "content-length", tostring(#opts.body) } end
  if opts.close then list[#list + 1] = { "connection", "close" } end
  return M.build(method, opts.path or "/", list, opts.body)
end

-- One request on a new connection; returns the response (with
-- res.closed telling whether the server closed the connection after it,
-- when opts.check_closed).
function M.request(port, opts)
  local c, err = M.connect(port, { timeout = opts.timeout })
  if not c then return nil, err end
  local ok, serr = c:send(M.request_bytes(opts))
  if not ok then c:close(); return nil, serr end
  local res, rerr = c:read_response({ method = opts.method, timeout = opts.timeout })
  if res and opts.check_closed then
    res.closed = c:closed(opts.close_wait or 0.3)
  end
  c:close()
  return res, rerr
end

-- ---- the chat API ------------------------------------------------------------

function M.chat_body(extra)
  local s = '{"model":"mock-model","messages":[{"role":"user","content":"hi"}]'
  if extra then s = s .. "," .. extra end
  return s .. "}"
end

function M.chat(port, headers, extra_json, opts)
  opts = opts or {}
  opts.method = "POST"
  opts.path = opts.path or "/v1/chat/completions"
  opts.headers = headers or {}
  local h = opts.headers
  if #h == 0 then h["content-type"] = h["content-type"] or "application/json" end
  opts.body = M.chat_body(extra_json)
  return M.request(port, opts)
end

-- A GET against the mock's stats: { connections = n, requests = n }.
function M.mock_stats(port)
  local res = assert(M.request(port, { path = "/mock/stats" }))
  assert(res.status == 200, "mock stats: " .. tostring(res.status))
  return {
    connections = tonumber(res.body:match('"connections":(%d+)')),
    requests = tonumber(res.body:match('"requests":(%d+)')),
  }
end

-- A tiny JSON reader, enough for the answers the specs read (no escapes
-- beyond \" \\ \/ \n \t \uXXXX kept as-is).
function M.json(s)
  local ok, cjson = pcall(require, "dkjson")
  if ok and cjson then
    local v, _, err = cjson.decode(s)
    if err then return nil, err end
    return v
  end
  error("no JSON decoder available")
end

-- Is body an OpenAI-shaped error? Returns the decoded error table.
function M.error_of(res)
  if not res or not res.body then return nil end
  local j = M.json(res.body)
  if type(j) ~= "table" or type(j.error) ~= "table" then return nil end
  return j.error
end

-- Header list of a /mock/echo answer as a lowercase name → list of values.
function M.echo_headers(res)
  local j = assert(M.json(res.body), "echo body is not JSON: " .. tostring(res.body))
  local map = {}
  for _, h in ipairs(j.headers) do
    local n = h[1]:lower()
    map[n] = map[n] or {}
    table.insert(map[n], h[2])
  end
  return map, j
end

return M
