//! `cnnc lsp`: a language server over standard input and output for `.cnn` specs and YAML specs
//! with a top-level `layers:`. The protocol stays here, at the edge; every answer comes from
//! [`analysis`], the same parse and check `cnnc check` runs. Each change re-analyses the whole
//! document (a 1,000-layer spec takes a few milliseconds) and publishes its diagnostics.

pub mod analysis;
pub mod position;

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Context;
use cnnc_spec::{Format, Source, Span};
use lsp_server::{Connection, ErrorCode, Message, Notification, Request, RequestId, Response};
use lsp_types::notification::{
    DidChangeTextDocument, DidCloseTextDocument, DidOpenTextDocument, Exit, Notification as _,
    PublishDiagnostics,
};
use lsp_types::request::{
    CodeActionRequest, Completion, DocumentSymbolRequest, Formatting, GotoDefinition, HoverRequest,
    InlayHintRequest, References, Rename, Request as _, Shutdown,
};
use lsp_types::{
    CodeAction, CodeActionKind, CodeActionOrCommand, CodeActionParams,
    CodeActionProviderCapability, CompletionItem, CompletionItemKind, CompletionOptions,
    CompletionParams, DiagnosticRelatedInformation, DiagnosticSeverity,
    DidChangeTextDocumentParams, DidCloseTextDocumentParams, DidOpenTextDocumentParams,
    DocumentFormattingParams, DocumentSymbol, DocumentSymbolParams, DocumentSymbolResponse,
    Documentation, GotoDefinitionParams, GotoDefinitionResponse, Hover, HoverContents, HoverParams,
    HoverProviderCapability, InlayHint, InlayHintLabel, InlayHintParams, Location, MarkupContent,
    MarkupKind, NumberOrString, OneOf, PublishDiagnosticsParams, ReferenceParams, RenameParams,
    ServerCapabilities, SymbolKind, TextDocumentSyncCapability, TextDocumentSyncKind, TextEdit,
    Uri, WorkspaceEdit,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use analysis::{Analysis, Completion as Offer, analyze, completion_at, describe_arg, is_spec};
use position::LineIndex;

/// Arguments of `cnnc lsp`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Accepted for clients that pass it (VS Code's language client does); standard input and
    /// output are the only transport.
    #[arg(long)]
    pub stdio: bool,
}

/// Runs `cnnc lsp` until the client says `exit`: exit status 0 after `shutdown`, 1 without.
pub fn run(_args: &Args) -> anyhow::Result<ExitCode> {
    let (connection, io_threads) = Connection::stdio();
    let capabilities = serde_json::to_value(capabilities())?;
    connection
        .initialize(capabilities)
        .context("the language client did not initialize")?;
    let shut_down = Server::default().serve(&connection)?;
    drop(connection);
    io_threads
        .join()
        .context("the language client's stream failed")?;
    Ok(ExitCode::from(if shut_down { 0 } else { 1 }))
}

/// What the server offers.
pub fn capabilities() -> ServerCapabilities {
    ServerCapabilities {
        text_document_sync: Some(TextDocumentSyncCapability::Kind(
            TextDocumentSyncKind::INCREMENTAL,
        )),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        completion_provider: Some(CompletionOptions {
            trigger_characters: Some(["(", ",", "=", "{", ":", " ", "-"].map(String::from).into()),
            ..CompletionOptions::default()
        }),
        definition_provider: Some(OneOf::Left(true)),
        references_provider: Some(OneOf::Left(true)),
        rename_provider: Some(OneOf::Left(true)),
        document_symbol_provider: Some(OneOf::Left(true)),
        document_formatting_provider: Some(OneOf::Left(true)),
        code_action_provider: Some(CodeActionProviderCapability::Simple(true)),
        inlay_hint_provider: Some(OneOf::Left(true)),
        ..ServerCapabilities::default()
    }
}

/// One open document and its analysis.
struct Document {
    source: Source,
    index: LineIndex,
    /// `None` for YAML that is not a spec: left alone.
    analysis: Option<Analysis>,
}

impl Document {
    fn new(uri: &Uri, text: String, language: Option<&str>) -> Document {
        let format = format_of(uri, language);
        let index = LineIndex::new(&text);
        let source = Source::new(uri.as_str().to_owned(), text, format);
        let analysis = is_spec(source.text(), format).then(|| analyze(&source));
        Document {
            source,
            index,
            analysis,
        }
    }

    fn range(&self, span: Span) -> lsp_types::Range {
        self.index
            .range(self.source.text(), span.start as usize, span.end as usize)
    }

    fn offset(&self, position: lsp_types::Position) -> usize {
        self.index.offset(self.source.text(), position)
    }
}

/// The language of `uri`: its extension, else the client's language id.
fn format_of(uri: &Uri, language: Option<&str>) -> Format {
    let path = uri.path().as_str();
    if path.ends_with(".cnn") {
        Format::Dsl
    } else if path.ends_with(".yaml") || path.ends_with(".yml") || language == Some("yaml") {
        Format::Yaml
    } else {
        Format::Dsl
    }
}

/// The open documents.
#[derive(Default)]
struct Server {
    documents: HashMap<Uri, (Document, Option<String>)>,
}

impl Server {
    /// Serves until `exit`; whether `shutdown` came first (LSP's exit status 0, else 1). A client
    /// that asks to shut down twice, or keeps asking afterwards, gets errors, not a crash.
    fn serve(&mut self, connection: &Connection) -> anyhow::Result<bool> {
        let mut shut_down = false;
        for message in &connection.receiver {
            match message {
                Message::Request(request) => {
                    let response = if shut_down {
                        Response::new_err(
                            request.id,
                            ErrorCode::InvalidRequest as i32,
                            "the server is shutting down".to_owned(),
                        )
                    } else if request.method == Shutdown::METHOD {
                        shut_down = true;
                        Response::new_ok(request.id, ())
                    } else {
                        self.answer(request)
                    };
                    connection.sender.send(Message::Response(response))?;
                }
                Message::Notification(notification) if notification.method == Exit::METHOD => {
                    return Ok(shut_down);
                }
                Message::Notification(notification) => {
                    if let Some(published) = self.notify(notification) {
                        connection.sender.send(Message::Notification(published))?;
                    }
                }
                Message::Response(_) => {}
            }
        }
        // The client closed the stream without `exit`.
        Ok(shut_down)
    }

    /// Handles a notification; the diagnostics to publish if a document changed.
    fn notify(&mut self, notification: Notification) -> Option<Notification> {
        let uri = match notification.method.as_str() {
            DidOpenTextDocument::METHOD => {
                let params: DidOpenTextDocumentParams =
                    notification.extract(DidOpenTextDocument::METHOD).ok()?;
                let doc = params.text_document;
                let language = Some(doc.language_id);
                let document = Document::new(&doc.uri, doc.text, language.as_deref());
                self.documents.insert(doc.uri.clone(), (document, language));
                doc.uri
            }
            DidChangeTextDocument::METHOD => {
                let params: DidChangeTextDocumentParams =
                    notification.extract(DidChangeTextDocument::METHOD).ok()?;
                let uri = params.text_document.uri;
                let (document, language) = self.documents.remove(&uri)?;
                let mut text = document.source.text().to_owned();
                let mut index = document.index;
                for change in params.content_changes {
                    match change.range {
                        Some(range) => {
                            let start = index.offset(&text, range.start);
                            let end = index.offset(&text, range.end).max(start);
                            text.replace_range(start..end, &change.text);
                        }
                        None => text = change.text,
                    }
                    index = LineIndex::new(&text);
                }
                let document = Document::new(&uri, text, language.as_deref());
                self.documents.insert(uri.clone(), (document, language));
                uri
            }
            DidCloseTextDocument::METHOD => {
                let params: DidCloseTextDocumentParams =
                    notification.extract(DidCloseTextDocument::METHOD).ok()?;
                self.documents.remove(&params.text_document.uri);
                return Some(publish(params.text_document.uri, Vec::new()));
            }
            _ => return None,
        };
        let (document, _) = self.documents.get(&uri)?;
        Some(publish(uri.clone(), diagnostics(&uri, document)))
    }

    /// Answers a request: a result, `null` where there is nothing to say, or an error for
    /// parameters that do not parse.
    fn answer(&self, request: Request) -> Response {
        let id = request.id.clone();
        match request.method.as_str() {
            HoverRequest::METHOD => self.reply(id, request, |s, p: HoverParams| {
                let at = &p.text_document_position_params;
                s.hover(&at.text_document.uri, at.position)
            }),
            InlayHintRequest::METHOD => self.reply(id, request, |s, p: InlayHintParams| {
                s.inlay_hints(&p.text_document.uri)
            }),
            Completion::METHOD => self.reply(id, request, |s, p: CompletionParams| {
                let at = &p.text_document_position;
                s.complete(&at.text_document.uri, at.position)
            }),
            CodeActionRequest::METHOD => {
                self.reply(id, request, |s, p: CodeActionParams| s.code_actions(&p))
            }
            GotoDefinition::METHOD => self.reply(id, request, |s, p: GotoDefinitionParams| {
                let at = &p.text_document_position_params;
                let found = s.references(&at.text_document.uri, at.position);
                found.into_iter().next().map(GotoDefinitionResponse::Scalar)
            }),
            References::METHOD => self.reply(id, request, |s, p: ReferenceParams| {
                let at = &p.text_document_position;
                Some(s.references(&at.text_document.uri, at.position))
            }),
            Rename::METHOD => self.reply(id, request, |s, p: RenameParams| s.rename(&p)),
            DocumentSymbolRequest::METHOD => {
                self.reply(id, request, |s, p: DocumentSymbolParams| {
                    s.symbols(&p.text_document.uri)
                })
            }
            Formatting::METHOD => self.reply(id, request, |s, p: DocumentFormattingParams| {
                s.format(&p.text_document.uri)
            }),
            method => Response::new_err(
                id,
                ErrorCode::MethodNotFound as i32,
                format!("cnnc lsp does not handle {method}"),
            ),
        }
    }

    fn reply<P: DeserializeOwned, R: Serialize>(
        &self,
        id: RequestId,
        request: Request,
        handle: impl FnOnce(&Self, P) -> R,
    ) -> Response {
        let method = request.method.clone();
        match request.extract::<P>(&method) {
            Ok((id, params)) => Response::new_ok(id, handle(self, params)),
            Err(err) => Response::new_err(
                id,
                ErrorCode::InvalidParams as i32,
                format!("invalid parameters for {method}: {err}"),
            ),
        }
    }

    /// A served document and its analysis.
    fn document(&self, uri: &Uri) -> Option<(&Document, &Analysis)> {
        let (document, _) = self.documents.get(uri)?;
        Some((document, document.analysis.as_ref()?))
    }

    fn hover(&self, uri: &Uri, at: lsp_types::Position) -> Option<Hover> {
        let (document, analysis) = self.document(uri)?;
        let (span, text) = analysis.hover(document.offset(at))?;
        Some(Hover {
            contents: HoverContents::Markup(MarkupContent {
                kind: MarkupKind::Markdown,
                value: text,
            }),
            range: Some(document.range(span)),
        })
    }

    fn inlay_hints(&self, uri: &Uri) -> Option<Vec<InlayHint>> {
        let (document, analysis) = self.document(uri)?;
        let text = document.source.text();
        let hints = analysis
            .shape_hints(&document.source)
            .into_iter()
            .map(|hint| InlayHint {
                position: document.index.position(text, hint.offset),
                label: InlayHintLabel::String(hint.label),
                kind: Some(lsp_types::InlayHintKind::TYPE),
                text_edits: None,
                tooltip: None,
                padding_left: Some(true),
                padding_right: None,
                data: None,
            });
        Some(hints.collect())
    }

    fn complete(&self, uri: &Uri, at: lsp_types::Position) -> Option<Vec<CompletionItem>> {
        let (document, _) = self.document(uri)?;
        let format = document.source.format();
        let offset = document.offset(at);
        let items = match completion_at(document.source.text(), format, offset) {
            Offer::Kinds => cnnc_spec::core::kind::TABLE
                .iter()
                .map(|info| CompletionItem {
                    label: info.keyword.to_owned(),
                    kind: Some(CompletionItemKind::CLASS),
                    detail: Some(format!("torch.nn.{}", info.torch_name)),
                    documentation: Some(Documentation::String(info.computes.to_owned())),
                    ..CompletionItem::default()
                })
                .collect(),
            Offer::Args(kind, written) => {
                let assign = match format {
                    Format::Dsl => "=",
                    Format::Yaml => ": ",
                };
                kind.args()
                    .iter()
                    .filter(|info| !written.iter().any(|w| w == info.name))
                    .map(|info| CompletionItem {
                        label: info.name.to_owned(),
                        kind: Some(CompletionItemKind::FIELD),
                        detail: Some(describe_arg(info)),
                        documentation: Some(Documentation::String(info.doc.to_owned())),
                        insert_text: Some(format!("{}{assign}", info.name)),
                        ..CompletionItem::default()
                    })
                    .collect()
            }
            Offer::Values(info) => match info.ty {
                cnnc_spec::core::kind::ArgType::Choice(words) => words,
                _ => &["true", "false"][..],
            }
            .iter()
            .map(|value| CompletionItem {
                label: (*value).to_owned(),
                kind: Some(CompletionItemKind::VALUE),
                detail: Some(info.name.to_owned()),
                ..CompletionItem::default()
            })
            .collect(),
            Offer::Nothing => Vec::new(),
        };
        Some(items)
    }

    fn code_actions(&self, params: &CodeActionParams) -> Option<Vec<CodeActionOrCommand>> {
        let uri = &params.text_document.uri;
        let (document, analysis) = self.document(uri)?;
        // Whole lines: editors ask with the cursor, which is seldom on the culprit itself.
        let text = document.source.text();
        let start = document.offset(lsp_types::Position::new(params.range.start.line, 0));
        let end = document.offset(params.range.end);
        let end = text[end..].find('\n').map_or(text.len(), |i| end + i);
        let actions = analysis
            .diagnostics
            .iter()
            .filter(|d| d.span.start as usize <= end && start <= d.span.end as usize)
            .filter_map(|d| {
                let fix = d.fix.as_ref()?;
                let edits = fix
                    .edits
                    .iter()
                    .map(|edit| TextEdit::new(document.range(edit.span), edit.replacement.clone()))
                    .collect();
                Some(CodeActionOrCommand::CodeAction(CodeAction {
                    title: fix.message.clone(),
                    kind: Some(CodeActionKind::QUICKFIX),
                    diagnostics: Some(vec![diagnostic(uri, document, d)]),
                    edit: Some(WorkspaceEdit::new(HashMap::from([(uri.clone(), edits)]))),
                    is_preferred: Some(true),
                    ..CodeAction::default()
                }))
            })
            .collect();
        Some(actions)
    }

    fn references(&self, uri: &Uri, at: lsp_types::Position) -> Vec<Location> {
        let Some((document, analysis)) = self.document(uri) else {
            return Vec::new();
        };
        analysis
            .name_references(document.offset(at))
            .into_iter()
            .map(|span| Location::new(uri.clone(), document.range(span)))
            .collect()
    }

    fn rename(&self, params: &RenameParams) -> Option<WorkspaceEdit> {
        let at = &params.text_document_position;
        let uri = &at.text_document.uri;
        let edits: Vec<TextEdit> = self
            .references(uri, at.position)
            .into_iter()
            .map(|location| TextEdit::new(location.range, params.new_name.clone()))
            .collect();
        (!edits.is_empty()).then(|| WorkspaceEdit::new(HashMap::from([(uri.clone(), edits)])))
    }

    fn symbols(&self, uri: &Uri) -> Option<DocumentSymbolResponse> {
        let (document, analysis) = self.document(uri)?;
        #[allow(deprecated)] // `deprecated` is a required field of the struct.
        let symbols = analysis
            .symbols()
            .into_iter()
            .map(|symbol| DocumentSymbol {
                name: symbol.name,
                detail: Some(symbol.detail),
                kind: SymbolKind::OBJECT,
                tags: None,
                deprecated: None,
                range: document.range(symbol.span),
                selection_range: document.range(symbol.name_span),
                children: None,
            })
            .collect();
        Some(DocumentSymbolResponse::Nested(symbols))
    }

    /// `cnnc fmt`'s layout as one edit; nothing when the spec does not parse or is formatted.
    fn format(&self, uri: &Uri) -> Option<Vec<TextEdit>> {
        let (document, _) = self.document(uri)?;
        let source = &document.source;
        let text = super::fmt::format(source, source.format()).ok()?;
        if text == source.text() {
            return Some(Vec::new());
        }
        let whole = document.index.range(source.text(), 0, source.text().len());
        Some(vec![TextEdit::new(whole, text)])
    }
}

/// The `textDocument/publishDiagnostics` notification.
fn publish(uri: Uri, diagnostics: Vec<lsp_types::Diagnostic>) -> Notification {
    let params = PublishDiagnosticsParams::new(uri, diagnostics, None);
    Notification::new(PublishDiagnostics::METHOD.to_owned(), params)
}

/// A document's diagnostics for the client (as many as `cnnc check` shows).
fn diagnostics(uri: &Uri, document: &Document) -> Vec<lsp_types::Diagnostic> {
    let Some(analysis) = &document.analysis else {
        return Vec::new();
    };
    let shown = cnnc_spec::Shown::of(&analysis.diagnostics);
    shown
        .shown
        .iter()
        .map(|d| diagnostic(uri, document, d))
        .collect()
}

/// One diagnostic: the code, message and label, notes and help below; secondary labels become
/// related locations.
fn diagnostic(uri: &Uri, document: &Document, d: &cnnc_spec::Diagnostic) -> lsp_types::Diagnostic {
    let mut message = d.message.clone();
    if !d.label.is_empty() {
        message.push_str(&format!("\n{}", d.label));
    }
    for note in &d.notes {
        message.push_str(&format!("\nnote: {note}"));
    }
    if let Some(help) = &d.help {
        message.push_str(&format!("\nhelp: {help}"));
    }
    let related: Vec<_> = d
        .secondary
        .iter()
        .map(|label| DiagnosticRelatedInformation {
            location: Location::new(uri.clone(), document.range(label.span)),
            message: label.text.clone(),
        })
        .collect();
    lsp_types::Diagnostic {
        range: document.range(d.span),
        severity: Some(if d.is_error() {
            DiagnosticSeverity::ERROR
        } else {
            DiagnosticSeverity::WARNING
        }),
        code: Some(NumberOrString::String(d.code.as_str().to_owned())),
        source: Some("cnnc".to_owned()),
        message,
        related_information: (!related.is_empty()).then_some(related),
        ..lsp_types::Diagnostic::default()
    }
}
