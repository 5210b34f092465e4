-- Run by test.sh inside `nvim --headless`: opens the spec named by $CNNC_SPEC through cnnc.lua's
-- configuration, waits for the diagnostic, reads the inlay hints, applies the code action,
-- saves, and quits with status 0 only if every step happened. Each step is printed.

local function say(text)
  io.stdout:write(text .. "\n")
end

local function fail(text)
  say("FAIL: " .. text)
  vim.cmd("cquit! 1")
end

local here = vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":h")
vim.cmd("filetype on")
local cnnc = dofile(here .. "/cnnc.lua")
cnnc.setup({ cmd = { vim.env.CNNC, "lsp" } })

vim.cmd("edit " .. vim.fn.fnameescape(vim.env.CNNC_SPEC))
local buf = vim.api.nvim_get_current_buf()
say("filetype: " .. vim.bo[buf].filetype)

local function client()
  local get = vim.lsp.get_clients or vim.lsp.get_active_clients
  return get({ name = "cnnc" })[1]
end

if not vim.wait(10000, function() return #vim.diagnostic.get(buf) > 0 end, 50) then
  fail("no diagnostic arrived")
end
local diagnostic = vim.diagnostic.get(buf)[1]
say(string.format("diagnostic: line %d: [%s] %s", diagnostic.lnum + 1,
  tostring(diagnostic.code or (diagnostic.user_data and diagnostic.user_data.lsp and diagnostic.user_data.lsp.code)),
  vim.split(diagnostic.message, "\n")[1]))

local c = client()
if not c then
  fail("the cnnc client is not running")
end
local last = vim.api.nvim_buf_line_count(buf)
local hints = c.request_sync("textDocument/inlayHint", {
  textDocument = vim.lsp.util.make_text_document_params(buf),
  range = { start = { line = 0, character = 0 }, ["end"] = { line = last, character = 0 } },
}, 5000, buf)
if not hints or not hints.result or #hints.result == 0 then
  fail("no inlay hints")
end
for _, hint in ipairs(hints.result) do
  say(string.format("inlay hint: line %d: %s", hint.position.line + 1, hint.label))
end

local line = diagnostic.lnum
local actions = c.request_sync("textDocument/codeAction", {
  textDocument = vim.lsp.util.make_text_document_params(buf),
  range = { start = { line = line, character = 0 }, ["end"] = { line = line, character = 0 } },
  context = { diagnostics = {} },
}, 5000, buf)
local action = actions and actions.result and actions.result[1]
if not action or not action.edit then
  fail("no code action")
end
say("code action: " .. action.title)
vim.lsp.util.apply_workspace_edit(action.edit, "utf-16")
vim.cmd("write")

if not vim.wait(10000, function() return #vim.diagnostic.get(buf) == 0 end, 50) then
  fail("the diagnostic did not clear after the fix")
end
say("diagnostics after the fix: 0")
-- shutdown, then exit: the server must end by itself, cleanly.
c.stop()
if not vim.wait(5000, function() return c.is_stopped() end, 50) then
  fail("the server did not stop")
end
say("server stopped")
vim.cmd("qall!")
