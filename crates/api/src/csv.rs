//! CSV answers: which callers want one, and the body that streams one a piece at a time.
//!
//! Points and aggregates answer in CSV with `format=csv`, or with `Accept: text/csv` when no
//! `format` is given. A CSV export may span a year of one-second readings (31 million rows,
//! about a gigabyte), so it is never built whole: [`stream`] computes it in pieces of at most
//! [`PIECE_ROWS`] rows, each on the query pool ([`QueryPool`]) like any heavy query, and hands
//! them to the client through a channel of two pieces, so memory stays at a few pieces
//! whatever the range, a slow client slows the export instead of filling memory, and a
//! client that hangs up stops it. The first piece is computed before the answer starts, so
//! an error there is still a JSON error with its status; an error after that can only cut
//! the body short, which the client sees as a truncated transfer, never as a whole file.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::Frame;
use tokio::sync::mpsc;

use crate::blocking::QueryPool;
use crate::error::ApiError;

/// Rows in one piece of a streamed CSV: about half a megabyte of points.
pub const PIECE_ROWS: usize = 10_000;

/// The media type of every CSV answer (RFC 4180, with its header row).
pub const CONTENT_TYPE: &str = "text/csv; charset=utf-8; header=present";

/// Whether the caller asked for CSV: `format=csv` or `format=json` decides; without it, an
/// `Accept` header that names `text/csv` (not with `q=0`) does.
pub fn wanted(format: Option<&str>, headers: &HeaderMap) -> Result<bool, ApiError> {
    match format {
        Some("csv") => Ok(true),
        Some("json") => Ok(false),
        Some(other) => Err(ApiError::BadRequest(format!("format must be json or csv, got {other:?}"))),
        None => Ok(accepts(headers, "text/csv")),
    }
}

/// Whether an `Accept` header names `media_type` exactly (any case), not with `q=0`.
pub fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|accept| {
        accept.split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let refused = |p: &str| p.strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()) == Some(0.0);
            parts.next().is_some_and(|m| m.eq_ignore_ascii_case(media_type)) && !parts.any(refused)
        })
    })
}

/// One field, quoted as RFC 4180 asks when it holds a comma, a quote or a line break.
pub fn field(out: &mut String, value: &str) {
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

/// A CSV answer: `first` (the header row and the first rows), then what `next` makes of
/// `state` piece by piece, each on the query pool, until it hands back no state. `filename`
/// names the download.
pub async fn stream<S, F>(queries: QueryPool, filename: &str, first: String, state: Option<S>, next: F) -> Response
where
    S: Send + 'static,
    F: Fn(S) -> Result<(String, Option<S>), ApiError> + Send + Sync + Clone + 'static,
{
    let next = move |state: S| next(state).map(|(rows, more)| (Bytes::from(rows), more));
    stream_bytes(queries, CONTENT_TYPE, filename, Bytes::from(first), state, next).await
}

/// A streamed download of any `content_type`, made as [`stream`] makes a CSV: `first`, then
/// the pieces `next` makes of `state` on the query pool, through a channel of two (a piece
/// with no bytes is not sent). `mekong export`'s Parquet answers are made this way too.
pub async fn stream_bytes<S, F>(
    queries: QueryPool,
    content_type: &'static str,
    filename: &str,
    first: Bytes,
    state: Option<S>,
    next: F,
) -> Response
where
    S: Send + 'static,
    F: Fn(S) -> Result<(Bytes, Option<S>), ApiError> + Send + Sync + Clone + 'static,
{
    let (tx, rx) = mpsc::channel::<Result<Bytes, ApiError>>(2);
    // Cannot fail: the channel is new and has room.
    let _ = tx.try_send(Ok(first));
    if let Some(mut state) = state {
        tokio::spawn(async move {
            loop {
                let next = next.clone();
                let piece = queries.run(move || next(state)).await;
                let (bytes, more) = match piece {
                    Ok(piece) => piece,
                    Err(e) => {
                        tracing::warn!(error = %e, "a streamed download was cut short");
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                // The client hung up: stop reading the store for it.
                if !bytes.is_empty() && tx.send(Ok(bytes)).await.is_err() {
                    return;
                }
                match more {
                    Some(more) => state = more,
                    None => return,
                }
            }
        });
    }
    let disposition = format!("attachment; filename=\"{}\"", filename.replace(['"', '\\', '/'], "_"));
    let mut response = Body::new(ChannelBody { rx }).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// The pieces of a CSV as they come out of the channel.
struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, ApiError>>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = ApiError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ApiError>>> {
        self.rx.poll_recv(cx).map(|piece| piece.map(|piece| piece.map(Frame::data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(format: Option<&str>, accept: Option<&str>, expected: Result<bool, ()>) {
        let mut headers = HeaderMap::new();
        if let Some(accept) = accept {
            headers.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        }
        assert_eq!(wanted(format, &headers).map_err(|_| ()), expected, "{format:?} {accept:?}");
    }

    #[test]
    fn csv_when_asked_by_parameter_or_accept() {
        check(None, None, Ok(false));
        check(Some("csv"), None, Ok(true));
        check(Some("json"), Some("text/csv"), Ok(false));
        check(Some("xml"), None, Err(()));
        check(None, Some("text/csv"), Ok(true));
        check(None, Some("application/json, TEXT/CSV;q=0.5"), Ok(true));
        check(None, Some("text/csv;q=0"), Ok(false));
        check(None, Some("text/csv; q=0.0"), Ok(false));
        check(None, Some("text/csv; q=0.001"), Ok(true));
        check(None, Some("text/csv;q=0.1"), Ok(true));
        check(None, Some("application/json"), Ok(false));
        check(None, Some("*/*"), Ok(false));
    }

    #[test]
    fn fields_are_quoted_only_when_they_must_be() {
        let mut out = String::new();
        for value in ["hau-01", "a,b", "say \"hi\"", "two\nlines"] {
            field(&mut out, value);
            out.push('|');
        }
        assert_eq!(out, "hau-01|\"a,b\"|\"say \"\"hi\"\"\"|\"two\nlines\"|");
    }
}
