//! `cnnc lsp` driven over standard input and output with real LSP messages, as an editor sends
//! them: initialize, open a broken spec, hover, inlay hints, completion, a code action whose edit
//! is applied through an incremental change, and a clean shutdown.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{Value, json};

/// A running `cnnc lsp` and the messages it sent that no request has consumed yet.
struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: i64,
    pending: Vec<Value>,
}

impl Client {
    fn start() -> Client {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cnnc"))
            .arg("lsp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cnnc lsp starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Client {
            child,
            stdin,
            stdout,
            next_id: 1,
            pending: Vec::new(),
        }
    }

    fn send(&mut self, message: &Value) {
        let body = serde_json::to_vec(message).expect("json");
        write!(self.stdin, "Content-Length: {}\r\n\r\n", body.len()).expect("header");
        self.stdin.write_all(&body).expect("body");
        self.stdin.flush().expect("flush");
    }

    fn receive(&mut self) -> Value {
        let mut length = None;
        loop {
            let mut line = String::new();
            let read = self.stdout.read_line(&mut line).expect("header line");
            assert!(read > 0, "the server closed its output");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(n) = line.strip_prefix("Content-Length: ") {
                length = Some(n.parse::<usize>().expect("length"));
            }
        }
        let mut body = vec![0; length.expect("a Content-Length header")];
        self.stdout.read_exact(&mut body).expect("body");
        serde_json::from_slice(&body).expect("a JSON message")
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// Sends a request and returns its result, keeping notifications that arrive meanwhile.
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let message = self.receive();
            if message["id"] == json!(id) {
                assert!(message.get("error").is_none(), "{method}: {message}");
                return message["result"].clone();
            }
            self.pending.push(message);
        }
    }

    /// The next diagnostics published for `uri`.
    fn diagnostics(&mut self, uri: &str) -> Vec<Value> {
        loop {
            let message = match self.pending.is_empty() {
                true => self.receive(),
                false => self.pending.remove(0),
            };
            if message["method"] == "textDocument/publishDiagnostics"
                && message["params"]["uri"] == uri
            {
                return message["params"]["diagnostics"]
                    .as_array()
                    .expect("an array")
                    .clone();
            }
        }
    }
}

const URI: &str = "file:///work/tiny.cnn";
const BROKEN: &str = "model Tiny\ninput (3, 8, 8)\nconv2d(out_channels=4, kernel_size=3)\nrelu\nflatten\nlinear(in_features=100, out_features=2)\n";

fn at(line: u32, character: u32) -> Value {
    json!({"textDocument": {"uri": URI}, "position": {"line": line, "character": character}})
}

fn initialized() -> Client {
    let mut client = Client::start();
    let result = client.request("initialize", json!({"capabilities": {}, "processId": null}));
    let capabilities = &result["capabilities"];
    for capability in [
        "hoverProvider",
        "inlayHintProvider",
        "completionProvider",
        "codeActionProvider",
        "definitionProvider",
        "referencesProvider",
        "renameProvider",
        "documentSymbolProvider",
        "documentFormattingProvider",
    ] {
        assert!(
            !capabilities[capability].is_null(),
            "{capability}: {result}"
        );
    }
    assert_eq!(capabilities["textDocumentSync"], 2, "incremental sync");
    client.notify("initialized", json!({}));
    client
}

fn open(client: &mut Client, uri: &str, text: &str) -> Vec<Value> {
    client.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": "cnn", "version": 1, "text": text}}),
    );
    client.diagnostics(uri)
}

fn shutdown(mut client: Client) {
    assert_eq!(client.request("shutdown", Value::Null), Value::Null);
    client.notify("exit", Value::Null);
    drop(client.stdin);
    let status = client.child.wait().expect("exit status");
    assert!(status.success(), "{status}");
}

#[test]
fn a_broken_spec_is_diagnosed_explained_completed_and_fixed() {
    let mut client = initialized();
    let diagnostics = open(&mut client, URI, BROKEN);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    let diagnostic = &diagnostics[0];
    assert_eq!(diagnostic["code"], "E0301");
    assert_eq!(diagnostic["severity"], 1);
    assert_eq!(
        diagnostic["range"]["start"],
        json!({"line": 5, "character": 19})
    );
    assert_eq!(
        diagnostic["range"]["end"],
        json!({"line": 5, "character": 22})
    );
    let message = diagnostic["message"].as_str().expect("message");
    assert!(message.contains("144 features"), "{message}");
    assert!(
        message.contains("help: set `in_features: 144`"),
        "{message}"
    );
    // The secondary label (the flatten that made 144) is a related location.
    let related = &diagnostic["relatedInformation"][0];
    assert_eq!(related["location"]["range"]["start"]["line"], 4);

    let hover = client.request("textDocument/hover", at(2, 2));
    let hover = hover["contents"]["value"].as_str().expect("markdown");
    for expected in [
        "torch.nn.Conv2d",
        "[3, 8, 8] → [4, 6, 6]",
        "parameters: 112",
        "mult-adds: 4032",
        "floor((8 + 2*0 - 1*(3-1) - 1) / 1) + 1 = 6",
        "`out_channels`: integer ≥ 1, required",
    ] {
        assert!(hover.contains(expected), "{expected:?} in {hover}");
    }

    let range = json!({"start": {"line": 0, "character": 0}, "end": {"line": 6, "character": 0}});
    let hints = client.request(
        "textDocument/inlayHint",
        json!({"textDocument": {"uri": URI}, "range": range}),
    );
    let hints: Vec<(u64, u64, String)> = hints
        .as_array()
        .expect("hints")
        .iter()
        .map(|h| {
            let p = &h["position"];
            let line = p["line"].as_u64().expect("line");
            (
                line,
                p["character"].as_u64().expect("column"),
                h["label"].as_str().expect("label").to_owned(),
            )
        })
        .collect();
    // The layers before the error have shapes, each at the end of its line.
    assert_eq!(
        hints,
        [
            (2, 37, "→ [4, 6, 6]".to_owned()),
            (3, 4, "→ [4, 6, 6]".to_owned()),
            (4, 7, "→ [144]".to_owned()),
        ]
    );

    let labels = |items: &Value| -> Vec<String> {
        items
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["label"].as_str().expect("label").to_owned())
            .collect()
    };
    // Inside `conv2d(`: its arguments not yet written, with type, default and doc.
    let items = client.request("textDocument/completion", at(2, 7));
    let args = labels(&items);
    assert!(args.contains(&"stride".to_owned()), "{args:?}");
    assert!(args.contains(&"bias".to_owned()), "{args:?}");
    let padding = items
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["label"] == "padding");
    let detail = padding.expect("padding offered")["detail"]
        .as_str()
        .expect("detail");
    assert!(detail.contains("default 0"), "{detail}");
    // At the start of a line: the layer kinds.
    let kinds = labels(&client.request("textDocument/completion", at(3, 0)));
    assert!(
        kinds.contains(&"maxpool2d".to_owned()) && kinds.contains(&"batchnorm2d".to_owned()),
        "{kinds:?}"
    );

    // The code action on the cursor's line carries the fix; applying it clears the diagnostic.
    let actions = client.request(
        "textDocument/codeAction",
        json!({
            "textDocument": {"uri": URI},
            "range": {"start": {"line": 5, "character": 0}, "end": {"line": 5, "character": 0}},
            "context": {"diagnostics": []},
        }),
    );
    let action = &actions[0];
    assert_eq!(action["kind"], "quickfix");
    assert!(
        action["title"].as_str().expect("title").contains("144"),
        "{action}"
    );
    let edits = action["edit"]["changes"][URI]
        .as_array()
        .expect("edits")
        .clone();
    assert_eq!(edits.len(), 1);
    client.notify(
        "textDocument/didChange",
        json!({
            "textDocument": {"uri": URI, "version": 2},
            "contentChanges": [{"range": edits[0]["range"], "text": edits[0]["newText"]}],
        }),
    );
    assert_eq!(client.diagnostics(URI), Vec::<Value>::new());
    let formatted = client.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": URI}, "options": {"tabSize": 4, "insertSpaces": true}}),
    );
    assert!(formatted.as_array().is_some(), "{formatted}");
    // A full-text change breaks it again.
    client.notify(
        "textDocument/didChange",
        json!({
            "textDocument": {"uri": URI, "version": 3},
            "contentChanges": [{"text": "input (3, 8, 8)\nconv2d(kernel_size=3)\n"}],
        }),
    );
    let diagnostics = client.diagnostics(URI);
    assert_eq!(
        diagnostics[0]["range"]["start"]["line"], 1,
        "{diagnostics:?}"
    );
    shutdown(client);
}

#[test]
fn names_are_outlined_found_and_renamed() {
    let mut client = initialized();
    let text =
        "input (1, 8, 8)\nfeat: conv2d(out_channels=2, kernel_size=3)\nfeat: relu\nflatten\n";
    let diagnostics = open(&mut client, URI, text);
    assert!(
        diagnostics
            .iter()
            .any(|d| d["message"].as_str().is_some_and(|m| m.contains("feat"))),
        "{diagnostics:?}"
    );
    let references = client.request(
        "textDocument/references",
        json!({"textDocument": {"uri": URI}, "position": {"line": 2, "character": 1}, "context": {"includeDeclaration": true}}),
    );
    let lines: Vec<_> = references
        .as_array()
        .expect("locations")
        .iter()
        .map(|l| l["range"]["start"]["line"].clone())
        .collect();
    assert_eq!(lines, [json!(1), json!(2)]);
    let definition = client.request("textDocument/definition", at(2, 1));
    assert_eq!(definition["range"]["start"]["line"], 1, "{definition}");
    let rename = client.request(
        "textDocument/rename",
        json!({"textDocument": {"uri": URI}, "position": {"line": 1, "character": 0}, "newName": "body"}),
    );
    assert_eq!(
        rename["changes"][URI].as_array().expect("edits").len(),
        2,
        "{rename}"
    );
    let symbols = client.request(
        "textDocument/documentSymbol",
        json!({"textDocument": {"uri": URI}}),
    );
    let names: Vec<_> = symbols
        .as_array()
        .expect("symbols")
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(names.len(), 3, "{symbols}");
    assert_eq!(names[0], "feat");
    shutdown(client);
}

#[test]
fn yaml_without_layers_is_left_alone_and_yaml_specs_are_served() {
    let mut client = initialized();
    let other = "file:///work/config.yaml";
    assert_eq!(
        open(&mut client, other, "name: x\nsteps: [1, 2\n"),
        Vec::<Value>::new()
    );
    let spec = "file:///work/spec.yaml";
    let text = "input: [1, 8, 8]\nlayers:\n  - conv2d: {out_channels: 2, kernel_size: 3}\n  - flatten\n  - linear: {in_features: 7, out_features: 2}\n";
    let diagnostics = open(&mut client, spec, text);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0]["range"]["start"]["line"], 4);
    let items = client.request(
        "textDocument/completion",
        json!({"textDocument": {"uri": spec}, "position": {"line": 2, "character": 30}}),
    );
    let padding = items
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["label"] == "padding");
    assert_eq!(padding.expect("padding offered")["insertText"], "padding: ");
    shutdown(client);
}

#[test]
fn a_second_shutdown_is_refused_and_exit_without_shutdown_fails() {
    let mut client = initialized();
    assert_eq!(client.request("shutdown", Value::Null), Value::Null);
    client.send(&json!({"jsonrpc": "2.0", "id": 99, "method": "shutdown"}));
    let refused = client.receive();
    assert_eq!(refused["id"], 99);
    assert!(refused["error"]["message"].is_string(), "{refused}");
    client.notify("exit", Value::Null);
    assert!(client.child.wait().expect("status").success());

    let mut client = initialized();
    client.notify("exit", Value::Null);
    assert_eq!(client.child.wait().expect("status").code(), Some(1));
}

#[test]
fn unknown_requests_and_bad_parameters_get_errors_not_a_crash() {
    let mut client = initialized();
    client.send(&json!({"jsonrpc": "2.0", "id": 50, "method": "textDocument/hover", "params": {"nonsense": 1}}));
    assert_eq!(client.receive()["error"]["code"], -32602);
    client.send(&json!({"jsonrpc": "2.0", "id": 51, "method": "cnnc/unknown", "params": {}}));
    assert_eq!(client.receive()["error"]["code"], -32601);
    // A change far past the end of the text, and a hover on a document never opened.
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": URI, "version": 1}, "contentChanges": [{"text": "relu"}]}),
    );
    assert_eq!(client.request("textDocument/hover", at(0, 0)), Value::Null);
    let diagnostics = open(&mut client, URI, "input (1, 2, 2)\nrelu\n");
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    client.notify(
        "textDocument/didChange",
        json!({
            "textDocument": {"uri": URI, "version": 2},
            "contentChanges": [{"range": {"start": {"line": 40, "character": 9}, "end": {"line": 2, "character": 0}}, "text": "🙂("}],
        }),
    );
    let diagnostics = client.diagnostics(URI);
    assert!(!diagnostics.is_empty());
    shutdown(client);
}
