//! The stdio transport of `cnnc lsp`, bounded: LSP frames (`Content-Length` headers, then a JSON
//! body) read with a limit on every header line, on the number of headers and on the body, so that
//! no header can make the server allocate in proportion to what it claims. `lsp-server`'s own
//! stdio reader sizes its buffer by `Content-Length`; this one reads the body as it arrives and
//! refuses a claim over [`MAX_MESSAGE_BYTES`] before reading any of it. Messages go to and from
//! the server through an in-memory `lsp_server::Connection`.

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use lsp_server::{Connection, Message};
use lsp_types::notification::{Exit, Notification as _};

/// The largest message body read: far above any document the server analyses (a spec is at most
/// `cnnc_spec::MAX_SOURCE_BYTES`, 1 MiB, which JSON escaping makes at most six times longer).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The longest header line, its `\r\n` included (clients send two short ones).
pub const MAX_HEADER_LINE_BYTES: usize = 1024;

/// The most header lines before the blank line that ends them.
pub const MAX_HEADERS: usize = 16;

/// Why the client's stream cannot be read as LSP; each closes the connection.
#[derive(Debug)]
pub enum FrameError {
    /// Reading standard input failed.
    Io(io::Error),
    /// A header line longer than [`MAX_HEADER_LINE_BYTES`].
    LongHeader,
    /// More than [`MAX_HEADERS`] header lines.
    TooManyHeaders,
    /// A header that is not `Name: value` ending in `\r\n`, or not UTF-8.
    MalformedHeader(String),
    /// The headers ended without a `Content-Length`.
    NoLength,
    /// A `Content-Length` that is not a byte count.
    BadLength(String),
    /// A `Content-Length` over [`MAX_MESSAGE_BYTES`].
    TooLarge(u128),
    /// The stream ended inside a message's headers.
    EndInHeaders,
    /// The stream ended inside a message's body: `(claimed, read)` bytes of it.
    Truncated(usize, usize),
    /// A body that is not a JSON-RPC message.
    NotJson(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Io(err) => write!(f, "cannot read it: {err}"),
            FrameError::LongHeader => write!(
                f,
                "a header line is longer than {MAX_HEADER_LINE_BYTES} bytes: is the client \
                 speaking LSP?"
            ),
            FrameError::TooManyHeaders => write!(
                f,
                "a message has more than {MAX_HEADERS} header lines: is the client speaking LSP?"
            ),
            FrameError::MalformedHeader(line) => write!(
                f,
                "malformed header {line:?}: expected `Name: value` ending in \\r\\n"
            ),
            FrameError::NoLength => write!(f, "a message has no Content-Length header"),
            FrameError::BadLength(value) => {
                write!(f, "Content-Length {value:?} is not a number of bytes")
            }
            FrameError::TooLarge(claimed) => write!(
                f,
                "a message claims {claimed} bytes, more than the limit of {MAX_MESSAGE_BYTES} \
                 bytes ({} MiB); nothing of it was read",
                MAX_MESSAGE_BYTES >> 20
            ),
            FrameError::EndInHeaders => {
                write!(f, "it ended inside a message's headers")
            }
            FrameError::Truncated(claimed, read) => write!(
                f,
                "it ended after {read} of the {claimed} bytes a message claimed"
            ),
            FrameError::NotJson(err) => write!(f, "a message is not JSON-RPC: {err}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Reads one message body; `None` at the end of the stream between messages.
pub fn read_frame(input: &mut impl BufRead) -> Result<Option<Vec<u8>>, FrameError> {
    let mut length = None;
    let mut headers = 0;
    loop {
        let Some(line) = read_header_line(input)? else {
            if headers == 0 {
                return Ok(None);
            }
            return Err(FrameError::EndInHeaders);
        };
        let Some(line) = line.strip_suffix("\r\n") else {
            return Err(FrameError::MalformedHeader(line));
        };
        if line.is_empty() {
            break;
        }
        headers += 1;
        if headers > MAX_HEADERS {
            return Err(FrameError::TooManyHeaders);
        }
        let Some((name, value)) = line.split_once(": ") else {
            return Err(FrameError::MalformedHeader(line.to_owned()));
        };
        if name.eq_ignore_ascii_case("Content-Length") {
            let claimed: u128 = value
                .trim()
                .parse()
                .map_err(|_| FrameError::BadLength(value.to_owned()))?;
            match usize::try_from(claimed) {
                Ok(n) if n <= MAX_MESSAGE_BYTES => length = Some(n),
                _ => return Err(FrameError::TooLarge(claimed)),
            }
        }
    }
    let length = length.ok_or(FrameError::NoLength)?;
    // Grows with what arrives: a body shorter than its claim costs only what was sent.
    let mut body = Vec::new();
    input
        .take(length as u64)
        .read_to_end(&mut body)
        .map_err(FrameError::Io)?;
    if body.len() < length {
        return Err(FrameError::Truncated(length, body.len()));
    }
    Ok(Some(body))
}

/// One header line, `\r\n` included, at most [`MAX_HEADER_LINE_BYTES`] long; `None` at the end
/// of the stream before any byte of it.
fn read_header_line(input: &mut impl BufRead) -> Result<Option<String>, FrameError> {
    let mut line = Vec::new();
    let read = input
        .take(MAX_HEADER_LINE_BYTES as u64)
        .read_until(b'\n', &mut line)
        .map_err(FrameError::Io)?;
    if read == 0 {
        return Ok(None);
    }
    if !line.ends_with(b"\n") {
        if line.len() >= MAX_HEADER_LINE_BYTES {
            return Err(FrameError::LongHeader);
        }
        return Err(FrameError::EndInHeaders);
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|err| FrameError::MalformedHeader(String::from_utf8_lossy(err.as_bytes()).into()))
}

/// Reads one message; `None` at the end of the stream.
pub fn read_message(input: &mut impl BufRead) -> Result<Option<Message>, FrameError> {
    let Some(body) = read_frame(input)? else {
        return Ok(None);
    };
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|err| FrameError::NotJson(err.to_string()))
}

/// The threads moving messages between standard input and output and the server's connection.
pub struct Transport {
    reader: JoinHandle<()>,
    writer: JoinHandle<io::Result<()>>,
    /// Why the reader stopped early, set before it lets go of the connection.
    failure: Arc<Mutex<Option<FrameError>>>,
}

impl Transport {
    /// Ends the transport once the server is done with (and has dropped) its connection: the
    /// reader's error first, since it is why the server stopped early; else the server's outcome.
    /// The reader is waited for only when the server finished normally (it stops after `exit` or
    /// at the end of the input); after a server error it may still be blocked on the input.
    pub fn finish(self, served: anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
        let failure = self.failure.lock().ok().and_then(|mut slot| slot.take());
        let written = self.writer.join();
        if let Some(failure) = failure {
            return Err(
                anyhow::Error::new(failure).context("the language client's stream is not LSP")
            );
        }
        let code = served?;
        self.reader
            .join()
            .map_err(|_| anyhow::anyhow!("the message reader panicked"))?;
        written
            .map_err(|_| anyhow::anyhow!("the message writer panicked"))?
            .map_err(|err| anyhow::anyhow!("cannot write to the language client: {err}"))?;
        Ok(code)
    }
}

/// A connection for the server over standard input and output, with the bounded reader.
pub fn stdio() -> (Connection, Transport) {
    let (server, client) = Connection::memory();
    let Connection { sender, receiver } = client;
    let failure = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&failure);
    let reader = thread::spawn(move || {
        let stdin = io::stdin();
        let mut input = stdin.lock();
        if let Err(err) = forward(&mut input, |message| sender.send(message).is_ok())
            && let Ok(mut slot) = slot.lock()
        {
            *slot = Some(err);
        }
        // Only now does the server see the stream end, with the reason already recorded.
        drop(sender);
    });
    let writer = thread::spawn(move || {
        let stdout = io::stdout();
        let mut output = stdout.lock();
        for message in receiver {
            message.write(&mut output)?;
            output.flush()?;
        }
        Ok(())
    });
    (
        server,
        Transport {
            reader,
            writer,
            failure,
        },
    )
}

/// Reads messages from `input` and hands each to `deliver` until `exit`, the end of the input,
/// an unreadable message or `deliver` returning false (the server is gone).
fn forward(
    input: &mut impl BufRead,
    mut deliver: impl FnMut(Message) -> bool,
) -> Result<(), FrameError> {
    while let Some(message) = read_message(input)? {
        let exit = matches!(&message, Message::Notification(n) if n.method == Exit::METHOD);
        if !deliver(message) || exit {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn frame(body: &str) -> Vec<u8> {
        format!("Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
    }

    fn read(bytes: &[u8]) -> Result<Option<Vec<u8>>, FrameError> {
        read_frame(&mut Cursor::new(bytes))
    }

    #[test]
    fn frames_are_read_one_after_another() {
        let mut bytes = frame(r#"{"jsonrpc":"2.0","method":"a"}"#);
        bytes.extend(b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n");
        bytes.extend(frame(r#"{"jsonrpc":"2.0","method":"b"}"#));
        let mut input = Cursor::new(bytes);
        let mut methods = vec![];
        while let Some(Message::Notification(n)) = read_message(&mut input).expect("readable") {
            methods.push(n.method);
        }
        assert_eq!(methods, ["a", "b"]);
    }

    #[test]
    fn the_header_name_is_case_insensitive() {
        let body = read(b"content-length: 2\r\n\r\n{}").expect("readable");
        assert_eq!(body.as_deref(), Some(&b"{}"[..]));
    }

    #[test]
    fn the_end_of_the_stream_between_messages_is_not_an_error() {
        assert!(read(b"").expect("empty").is_none());
    }

    #[test]
    fn a_claim_over_the_limit_is_refused_before_reading_the_body() {
        for claim in [
            (MAX_MESSAGE_BYTES + 1).to_string(),
            u64::MAX.to_string(),
            "99999999999999999999999999".to_owned(),
        ] {
            let header = format!("Content-Length: {claim}\r\n\r\n");
            let err = read(header.as_bytes()).expect_err("too large");
            assert!(matches!(err, FrameError::TooLarge(_)), "{claim}: {err}");
            assert!(err.to_string().contains("more than the limit"), "{err}");
        }
        let err = read(b"Content-Length: 340282366920938463463374607431768211456\r\n\r\n")
            .expect_err("past u128");
        assert!(matches!(err, FrameError::BadLength(_)), "{err}");
    }

    #[test]
    fn a_body_shorter_than_its_claim_is_truncated() {
        let err = read(b"Content-Length: 1000\r\n\r\n{}").expect_err("short");
        assert!(matches!(err, FrameError::Truncated(1000, 2)), "{err}");
        let err = read(b"Content-Length: 10\r\n").expect_err("no blank line");
        assert!(matches!(err, FrameError::EndInHeaders), "{err}");
        let err = read(b"Content-Len").expect_err("half a header");
        assert!(matches!(err, FrameError::EndInHeaders), "{err}");
    }

    #[test]
    fn headers_are_bounded_in_length_and_number() {
        let long = vec![b'A'; 10 * MAX_HEADER_LINE_BYTES];
        assert!(matches!(read(&long), Err(FrameError::LongHeader)));
        let many = "X-Filler: 1\r\n".repeat(MAX_HEADERS + 1);
        assert!(matches!(
            read(many.as_bytes()),
            Err(FrameError::TooManyHeaders)
        ));
    }

    #[test]
    fn malformed_headers_are_named() {
        for (bytes, what) in [
            (&b"Content-Length 2\r\n\r\n{}"[..], "no colon"),
            (b"Content-Length: 2\n\n{}", "no carriage return"),
            (b"\xff\xfe: 2\r\n\r\n{}", "not UTF-8"),
        ] {
            let err = read(bytes).expect_err(what);
            assert!(
                matches!(err, FrameError::MalformedHeader(_)),
                "{what}: {err}"
            );
        }
        assert!(matches!(read(b"\r\n{}"), Err(FrameError::NoLength)));
        assert!(matches!(
            read(b"Content-Length: -1\r\n\r\n"),
            Err(FrameError::BadLength(_))
        ));
    }

    #[test]
    fn a_body_that_is_not_json_rpc_is_refused() {
        let err = read_message(&mut Cursor::new(frame("{not json"))).expect_err("bad");
        assert!(matches!(err, FrameError::NotJson(_)), "{err}");
    }

    #[test]
    fn forwarding_stops_after_exit_and_when_the_server_is_gone() {
        let mut bytes = frame(r#"{"jsonrpc":"2.0","method":"a"}"#);
        bytes.extend(frame(r#"{"jsonrpc":"2.0","method":"exit"}"#));
        bytes.extend(frame(r#"{"jsonrpc":"2.0","method":"after"}"#));
        let mut seen = vec![];
        forward(&mut Cursor::new(bytes.clone()), |m| {
            seen.push(m);
            true
        })
        .expect("forwarded");
        assert_eq!(seen.len(), 2, "{seen:?}");
        let mut count = 0;
        forward(&mut Cursor::new(bytes), |_| {
            count += 1;
            false
        })
        .expect("forwarded");
        assert_eq!(count, 1);
    }
}
