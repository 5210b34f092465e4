// The cnnc extension: highlights `.cnn` files (the grammar in syntaxes/) and starts `cnnc lsp`
// over stdio for `.cnn` files and for YAML specs (YAML with a top-level `layers:` key).

import * as vscode from "vscode";
import {
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  TransportKind,
} from "vscode-languageclient/node";

let client: LanguageClient | undefined;

/** Starts the language server, with the executable named by the `cnnc.path` setting. */
export async function activate(context: vscode.ExtensionContext): Promise<void> {
  await start();
  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (event.affectsConfiguration("cnnc.path")) {
        await stop();
        await start();
      }
    }),
  );
}

/** Stops the language server. */
export async function deactivate(): Promise<void> {
  await stop();
}

async function start(): Promise<void> {
  const command = vscode.workspace.getConfiguration("cnnc").get<string>("path") || "cnnc";
  const serverOptions: ServerOptions = {
    command,
    args: ["lsp"],
    transport: TransportKind.stdio,
  };
  const clientOptions: LanguageClientOptions = {
    // The server leaves YAML files without a top-level `layers:` alone, so every YAML file can
    // be offered to it; other YAML keeps its own language server.
    documentSelector: [
      { scheme: "file", language: "cnn" },
      { scheme: "untitled", language: "cnn" },
      { scheme: "file", language: "yaml" },
    ],
  };
  client = new LanguageClient("cnnc", "cnnc lsp", serverOptions, clientOptions);
  try {
    await client.start();
  } catch (err) {
    client = undefined;
    void vscode.window.showErrorMessage(
      `cnnc: cannot start \`${command} lsp\` (${String(err)}); set \`cnnc.path\` to the cnnc executable.`,
    );
  }
}

async function stop(): Promise<void> {
  if (client) {
    const running = client;
    client = undefined;
    await running.stop();
  }
}
