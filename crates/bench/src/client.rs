//! The query benchmark's HTTP/1.1 client: one kept-alive connection, requests written by
//! hand, bodies by length or chunked. The same client times mekong and its peers, so that
//! every figure holds the server's work and loopback, not a client library's.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context};

/// Most a body may be: more is a broken server or a wrong request, not a benchmark answer.
const MAX_BODY: usize = 1 << 30;

/// An answer: its status and body.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// One kept-alive connection to a server.
#[derive(Debug)]
pub struct Http {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    host: String,
}

impl Http {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> anyhow::Result<Http> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(300)))?;
        Ok(Http { reader: BufReader::new(stream.try_clone()?), writer: stream, host: addr.to_string() })
    }

    /// `GET path`, which must answer 200: its body.
    pub fn get(&mut self, path: &str) -> anyhow::Result<Vec<u8>> {
        let answer = self.request("GET", path, &[], &[])?;
        if answer.status != 200 {
            bail!("GET {path}: {} {}", answer.status, String::from_utf8_lossy(&answer.body));
        }
        Ok(answer.body)
    }

    /// `POST path` with `body` of `content_type`, which must answer 2xx: its body.
    pub fn post(&mut self, path: &str, content_type: &str, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        let answer = self.request("POST", path, &[("Content-Type", content_type)], body)?;
        if !(200..300).contains(&answer.status) {
            bail!("POST {path}: {} {}", answer.status, String::from_utf8_lossy(&answer.body));
        }
        Ok(answer.body)
    }

    /// Any request, with extra `headers` and a `body` (sent with its length when not empty).
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<Answer> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        self.writer.write_all(head.as_bytes())?;
        self.writer.write_all(body)?;
        read_answer(&mut self.reader, method == "HEAD")
    }
}

/// Reads one answer off a connection: the status line, the headers, and the body by
/// `Content-Length`, chunked, or (with neither) to the end of the connection.
pub fn read_answer(reader: &mut impl BufRead, head_only: bool) -> anyhow::Result<Answer> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        bail!("connection closed before the answer");
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP status line: {line:?}"))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("connection closed in the headers");
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().context("bad content-length")?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            }
        }
    }
    let no_body = head_only || status == 204 || status == 304 || (100..200).contains(&status);
    let body = if no_body {
        Vec::new()
    } else if chunked {
        read_chunked(reader)?
    } else if let Some(length) = length {
        if length > MAX_BODY {
            bail!("a body of {length} bytes");
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        body
    } else {
        let mut body = Vec::new();
        reader.take(MAX_BODY as u64).read_to_end(&mut body)?;
        body
    };
    Ok(Answer { status, body })
}

/// A chunked body (RFC 9112 section 7.1): sizes in hex, each chunk followed by CRLF, ended by
/// a chunk of size 0 and the (ignored) trailers.
fn read_chunked(reader: &mut impl BufRead) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("connection closed in a chunked body");
        }
        let size = line.trim_end().split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).with_context(|| format!("bad chunk size {size:?}"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            bail!("a chunked body over {MAX_BODY} bytes");
        }
        let at = body.len();
        body.resize(at + size, 0);
        reader.read_exact(&mut body[at..])?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            bail!("a chunk not followed by CRLF");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, expected: (u16, &str)) {
        let answer = read_answer(&mut raw.as_bytes(), false).unwrap();
        assert_eq!((answer.status, String::from_utf8(answer.body).unwrap().as_str()), expected);
    }

    #[test]
    fn bodies_by_length_chunked_and_to_the_end() {
        check("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhelloEXTRA", (200, "hello"));
        check(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n7;x=y\r\npedia i\r\n0\r\nTrailer: 1\r\n\r\n",
            (200, "Wikipedia i"),
        );
        check("HTTP/1.1 204 No Content\r\nX: y\r\n\r\n", (204, ""));
        check("HTTP/1.0 400 Bad Request\r\n\r\nwhy", (400, "why"));
    }

    #[test]
    fn broken_answers_are_errors() {
        for raw in [
            "",
            "garbage\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
        ] {
            assert!(read_answer(&mut raw.as_bytes(), false).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn two_answers_on_one_connection_are_read_apart() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nb\r\n0\r\n\r\n";
        let mut reader = raw.as_bytes();
        assert_eq!(read_answer(&mut reader, false).unwrap().body, b"a");
        assert_eq!(read_answer(&mut reader, false).unwrap().body, b"b");
        assert!(reader.is_empty());
    }
}
