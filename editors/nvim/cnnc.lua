-- cnnc's language server in Neovim's built-in client: `.cnn` files and YAML specs (a `.yaml`
-- or `.yml` with a top-level `layers:`) get `cnnc lsp`'s diagnostics, shape hints, hover,
-- completion, fixes, outline and formatting. Load it from init.lua:
--
--   dofile("/path/to/cnnc/editors/nvim/cnnc.lua").setup()
--   -- or with options: .setup({ cmd = { "/path/to/cnnc", "lsp" }, inlay_hints = false })
--
-- Works with Neovim 0.7 and later; on 0.11+ it registers through vim.lsp.config/vim.lsp.enable.

local M = {}

-- `.cnn` is cnnc's DSL.
local function register_filetype()
  if vim.filetype and vim.filetype.add then
    vim.filetype.add({ extension = { cnn = "cnn" } })
  end
  -- Neovim 0.7 reads vim.filetype.add only with g:do_filetype_lua; this covers it.
  vim.cmd([[autocmd BufRead,BufNewFile *.cnn setfiletype cnn]])
end

-- Whether the buffer is a cnnc spec: a `.cnn` file, or YAML with a top-level `layers:`.
function M.is_spec(bufnr)
  if vim.bo[bufnr].filetype == "cnn" then
    return true
  end
  for _, line in ipairs(vim.api.nvim_buf_get_lines(bufnr, 0, -1, false)) do
    if line:match("^layers:") then
      return true
    end
  end
  return false
end

local function enable_inlay_hints(bufnr)
  local hints = vim.lsp.inlay_hint
  if hints and hints.enable then
    pcall(hints.enable, true, { bufnr = bufnr })
  end
end

-- Starts (or reuses) the server for `bufnr`; returns the client id.
function M.attach(bufnr, opts)
  local config = {
    name = "cnnc",
    cmd = opts.cmd,
    root_dir = vim.fn.getcwd(),
    on_attach = function(_, buf)
      if opts.inlay_hints then
        enable_inlay_hints(buf)
      end
    end,
  }
  if vim.lsp.start then
    return vim.lsp.start(config, { bufnr = bufnr })
  end
  -- Neovim 0.7: no vim.lsp.start; one client shared by every spec buffer.
  M.client_id = M.client_id or vim.lsp.start_client(config)
  vim.lsp.buf_attach_client(bufnr, M.client_id)
  return M.client_id
end

function M.setup(opts)
  opts = vim.tbl_extend("force", { cmd = { "cnnc", "lsp" }, inlay_hints = true }, opts or {})
  register_filetype()
  if vim.lsp.config and vim.lsp.enable then
    vim.lsp.config("cnnc", {
      cmd = opts.cmd,
      filetypes = { "cnn", "yaml" },
      root_markers = { ".git" },
      -- YAML that is not a spec is left to other servers.
      root_dir = function(bufnr, on_dir)
        if M.is_spec(bufnr) then
          on_dir(vim.fs.root(bufnr, { ".git" }) or vim.fn.getcwd())
        end
      end,
      on_attach = function(_, buf)
        if opts.inlay_hints then
          enable_inlay_hints(buf)
        end
      end,
    })
    vim.lsp.enable("cnnc")
    return
  end
  vim.api.nvim_create_autocmd("FileType", {
    pattern = { "cnn", "yaml" },
    callback = function(args)
      if M.is_spec(args.buf) then
        M.attach(args.buf, opts)
      end
    end,
  })
end

return M
