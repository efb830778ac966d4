//! Any `:authority` on the unix socket.
//!
//! A client on a unix socket has no host to name, and each gRPC stack sends something of its
//! own as the HTTP/2 `:authority`: tonic and grpc-go send `localhost`, but grpcio (grpc-core,
//! so Python, Ruby, C++) sends the socket path, percent-encoded (`tmp%2Fcsi.sock`). The HTTP/2
//! layer under tonic (h2, through the `http` crate) takes a `%` in a host name for a malformed
//! authority and resets every such stream (`RST_STREAM`, PROTOCOL_ERROR) before the request
//! reaches any service, and it has no setting to relax that. The authority means nothing on a
//! unix socket, so [`AnyAuthority`] wraps each accepted unix connection and rewrites, in the
//! client's header blocks, an `:authority` that would be refused into `localhost`.
//!
//! How: the client-to-server byte stream is read frame by frame. Frames other than HEADERS and
//! CONTINUATION pass through untouched. Every header block is HPACK-decoded (which keeps a copy
//! of the client's dynamic table). Blocks pass through byte for byte until the first one that
//! needs a rewrite; from then on every block of the connection is re-encoded as literals
//! without indexing (the server's decoder table, no longer in step with the client's, is then
//! never used). A connection whose bytes cannot be followed (bad framing, an undecodable
//! block) is passed through unchanged from that point, for h2 to answer as it would have.
//! TCP endpoints are not wrapped.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame payload a client may send before the server raises it (RFC 9113 6.5.2;
/// tonic does not raise it). Re-encoded blocks are cut to this size too.
const MAX_FRAME: usize = 16_384;
/// The most header block bytes held while waiting for its last CONTINUATION.
const MAX_BLOCK: usize = 256 * 1024;
/// What an authority the server would refuse becomes.
const REPLACEMENT: &[u8] = b"localhost";

/// A unix connection whose HTTP/2 `:authority` is made acceptable (see the module docs).
pub struct AnyAuthority<S> {
    inner: S,
    /// Bytes read from the client and not yet sorted into frames.
    input: Vec<u8>,
    /// Bytes ready for the server.
    output: Vec<u8>,
    output_at: usize,
    /// Bytes of the connection preface still expected.
    preface_left: usize,
    /// Payload bytes of a pass-through frame still to forward as they come.
    forward_left: usize,
    /// A header block waiting for its CONTINUATION frames.
    pending: Option<Pending>,
    /// The frames of the header block being read, as received (for passing them through).
    held: Vec<u8>,
    decoder: loona_hpack::Decoder<'static>,
    /// Blocks are re-encoded (a rewrite happened on this connection).
    reencode: bool,
    /// The stream could not be followed: everything passes through.
    passthrough: bool,
    eof: bool,
}

struct Pending {
    stream: [u8; 4],
    flags: u8,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

impl<S> AnyAuthority<S> {
    /// Wraps an accepted connection.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            input: Vec::new(),
            output: Vec::new(),
            output_at: 0,
            preface_left: PREFACE.len(),
            forward_left: 0,
            pending: None,
            held: Vec::new(),
            decoder: loona_hpack::Decoder::new(),
            reencode: false,
            passthrough: false,
            eof: false,
        }
    }

    /// Whether an HTTP/2 server would refuse this `:authority` value.
    fn refused(value: &[u8]) -> bool {
        hyper::http::uri::Authority::try_from(value).is_err()
    }

    /// Gives up following the stream: what is held goes out as received.
    fn give_up(&mut self) {
        self.pending = None;
        self.output.append(&mut self.held);
        self.output.append(&mut self.input);
        self.passthrough = true;
    }

    /// Sorts the input into frames, moving everything that is complete to the output.
    fn process(&mut self) {
        loop {
            if self.passthrough {
                self.output.append(&mut self.input);
                return;
            }
            if self.preface_left > 0 {
                let n = self.preface_left.min(self.input.len());
                let start = PREFACE.len() - self.preface_left;
                if self.input[..n] != PREFACE[start..start + n] {
                    // Not HTTP/2 with prior knowledge: not ours to touch.
                    self.give_up();
                    return;
                }
                self.output.extend(self.input.drain(..n));
                self.preface_left -= n;
                if self.preface_left > 0 {
                    return;
                }
            }
            if self.forward_left > 0 {
                let n = self.forward_left.min(self.input.len());
                self.output.extend(self.input.drain(..n));
                self.forward_left -= n;
                if self.forward_left > 0 {
                    return;
                }
            }
            if self.input.len() < FRAME_HEADER {
                return;
            }
            let length = usize::from(self.input[0]) << 16
                | usize::from(self.input[1]) << 8
                | usize::from(self.input[2]);
            let kind = self.input[3];
            let flags = self.input[4];
            let stream = [self.input[5], self.input[6], self.input[7], self.input[8]];
            let is_header = kind == HEADERS || kind == CONTINUATION;
            let out_of_place = self.pending.is_some() != (kind == CONTINUATION);
            if (self.pending.is_some() || is_header) && (out_of_place || length > MAX_FRAME) {
                // Another frame inside a header block, a CONTINUATION with no HEADERS, an
                // oversized header frame: h2 answers these with a connection error.
                self.give_up();
                return;
            }
            if !is_header {
                self.output.extend(self.input.drain(..FRAME_HEADER));
                self.forward_left = length;
                continue;
            }
            if self.input.len() < FRAME_HEADER + length {
                return;
            }
            self.held.extend(self.input.drain(..FRAME_HEADER + length));
            let start = self.held.len() - length;
            let payload = self.held[start..].to_vec();
            if !self.header_frame(kind, flags, stream, &payload) {
                self.give_up();
                return;
            }
        }
    }

    /// Takes the payload of one HEADERS or CONTINUATION frame (already in `held`); false when
    /// it cannot be followed.
    fn header_frame(&mut self, kind: u8, flags: u8, stream: [u8; 4], payload: &[u8]) -> bool {
        if kind == HEADERS {
            let mut at = 0;
            let mut end = payload.len();
            if flags & PADDED != 0 {
                let Some(&pad) = payload.first() else {
                    return false;
                };
                at = 1;
                end = match end.checked_sub(usize::from(pad)) {
                    Some(e) if e >= at => e,
                    _ => return false,
                };
            }
            let priority = if flags & PRIORITY != 0 {
                let Some(p) = payload
                    .get(at..at + 5)
                    .and_then(|p| <[u8; 5]>::try_from(p).ok())
                else {
                    return false;
                };
                at += 5;
                Some(p)
            } else {
                None
            };
            if at > end {
                return false;
            }
            self.pending = Some(Pending {
                stream,
                flags,
                priority,
                block: payload[at..end].to_vec(),
            });
        } else {
            let Some(p) = self.pending.as_mut() else {
                return false;
            };
            if p.stream != stream || p.block.len() + payload.len() > MAX_BLOCK {
                return false;
            }
            p.block.extend_from_slice(payload);
        }
        if flags & END_HEADERS == 0 {
            return true;
        }
        let Some(p) = self.pending.take() else {
            return false;
        };
        let Ok(mut fields) = self.decoder.decode(&p.block) else {
            return false;
        };
        for (name, value) in fields.iter_mut() {
            if name.as_slice() == b":authority" && Self::refused(value) {
                tracing::debug!(
                    authority = %String::from_utf8_lossy(value),
                    "unix socket: the client's :authority is not a host name; serving it as localhost"
                );
                *value = REPLACEMENT.to_vec();
                self.reencode = true;
            }
        }
        if self.reencode {
            self.output.extend(encode_frames(&p, &fields));
            self.held.clear();
        } else {
            self.output.append(&mut self.held);
        }
        true
    }
}

/// The header block `fields` as HEADERS + CONTINUATION frames for the stream of `p`, every
/// field a literal without indexing (RFC 7541 6.2.2), no padding.
fn encode_frames(p: &Pending, fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0x00);
        for text in [name, value] {
            // A Vec never fails to take bytes.
            let _ = loona_hpack::encoder::encode_integer_into(text.len(), 7, 0, &mut block);
            block.extend_from_slice(text);
        }
    }
    let mut out = Vec::with_capacity(block.len() + 2 * FRAME_HEADER + 5);
    let first_room = MAX_FRAME - if p.priority.is_some() { 5 } else { 0 };
    let mut chunks = Vec::new();
    let (first, mut rest) = block.split_at(block.len().min(first_room));
    chunks.push(first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
        chunks.push(chunk);
        rest = tail;
    }
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.iter().enumerate() {
        let (kind, mut flags, prefix): (u8, u8, &[u8]) = if i == 0 {
            (
                HEADERS,
                p.flags & (END_STREAM | PRIORITY),
                p.priority.as_ref().map(|p| &p[..]).unwrap_or(&[]),
            )
        } else {
            (CONTINUATION, 0, &[])
        };
        if i == last {
            flags |= END_HEADERS;
        }
        let length = prefix.len() + chunk.len();
        out.extend_from_slice(&[(length >> 16) as u8, (length >> 8) as u8, length as u8]);
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&p.stream);
        out.extend_from_slice(prefix);
        out.extend_from_slice(chunk);
    }
    out
}

impl<S: AsyncRead + Unpin> AsyncRead for AnyAuthority<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.output_at < this.output.len() {
                let n = buf.remaining().min(this.output.len() - this.output_at);
                buf.put_slice(&this.output[this.output_at..this.output_at + n]);
                this.output_at += n;
                if this.output_at == this.output.len() {
                    this.output.clear();
                    this.output_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if read.filled().is_empty() {
                        // The client closed: whatever is held goes out as it came.
                        this.eof = true;
                        this.give_up();
                    } else {
                        this.input.extend_from_slice(read.filled());
                        this.process();
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AnyAuthority<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AnyAuthority<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![
            (payload.len() >> 16) as u8,
            (payload.len() >> 8) as u8,
            payload.len() as u8,
            kind,
            flags,
        ];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// Runs `input` through the wrapper, fed in pieces of `step` bytes.
    async fn through(input: &[u8], step: usize) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let input = input.to_vec();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in input.chunks(step) {
                client.write_all(piece).await.expect("write");
            }
            client.shutdown().await.expect("shutdown");
        });
        let mut out = Vec::new();
        AnyAuthority::new(server)
            .read_to_end(&mut out)
            .await
            .expect("read");
        writer.await.expect("writer");
        out
    }

    /// Splits server-side bytes into frames and decodes every header block.
    fn headers_seen(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        assert!(bytes.starts_with(PREFACE));
        let mut rest = &bytes[PREFACE.len()..];
        let mut decoder = loona_hpack::Decoder::new();
        let (mut blocks, mut block) = (Vec::new(), Vec::new());
        while !rest.is_empty() {
            let length =
                usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let (kind, flags) = (rest[3], rest[4]);
            let payload = &rest[FRAME_HEADER..FRAME_HEADER + length];
            if kind == HEADERS || kind == CONTINUATION {
                let skip = if kind == HEADERS && flags & PRIORITY != 0 {
                    5
                } else {
                    0
                };
                block.extend_from_slice(&payload[skip..]);
                if flags & END_HEADERS != 0 {
                    blocks.push(decoder.decode(&block).expect("the server can decode it"));
                    block.clear();
                }
            }
            rest = &rest[FRAME_HEADER + length..];
        }
        blocks
    }

    fn authority(block: &[(Vec<u8>, Vec<u8>)]) -> String {
        let value = &block
            .iter()
            .find(|(n, _)| n == b":authority")
            .expect("authority")
            .1;
        String::from_utf8(value.clone()).expect("utf-8")
    }

    /// Two requests as grpc-core sends them: the second names the authority through the
    /// dynamic table the first one filled.
    fn two_requests(authority: &[u8]) -> Vec<u8> {
        let mut encoder = loona_hpack::Encoder::new();
        let request = |path: &'static [u8]| {
            vec![
                (&b":path"[..], path),
                (&b":authority"[..], authority),
                (&b":method"[..], &b"POST"[..]),
                (&b":scheme"[..], &b"http"[..]),
                (&b"content-type"[..], &b"application/grpc"[..]),
            ]
        };
        let first = encoder.encode(request(b"/csi.v1.Identity/Probe"));
        let second = encoder.encode(request(b"/csi.v1.Identity/GetPluginInfo"));
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        // The first block in a HEADERS + CONTINUATION pair, padded, with priority.
        let (a, b) = first.split_at(first.len() / 2);
        let mut payload = vec![3u8];
        payload.extend_from_slice(&[0, 0, 0, 0, 15]);
        payload.extend_from_slice(a);
        payload.extend_from_slice(&[0, 0, 0]);
        bytes.extend(frame(HEADERS, PADDED | PRIORITY, 1, &payload));
        bytes.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        bytes.extend(frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 0])); // DATA
        bytes.extend(frame(HEADERS, END_HEADERS, 3, &second));
        bytes.extend(frame(0x0, END_STREAM, 3, &[0, 0, 0, 0, 0]));
        bytes
    }

    #[tokio::test]
    async fn a_percent_encoded_socket_path_becomes_localhost_in_every_request() {
        let input = two_requests(b"tmp%2Fsnapcsi%2Fcsi.sock");
        for step in [1, 7, 100, input.len()] {
            let out = through(&input, step).await;
            let blocks = headers_seen(&out);
            assert_eq!(blocks.len(), 2);
            for block in &blocks {
                assert_eq!(authority(block), "localhost", "piece size {step}");
            }
            assert_eq!(blocks[1][0].1, b"/csi.v1.Identity/GetPluginInfo");
            // DATA and SETTINGS frames are untouched.
            assert!(out.ends_with(&frame(0x0, END_STREAM, 3, &[0, 0, 0, 0, 0])));
        }
    }

    #[tokio::test]
    async fn a_valid_authority_passes_byte_for_byte() {
        let input = two_requests(b"localhost");
        assert_eq!(through(&input, 5).await, input);
        let input = two_requests(b"csi.example:443");
        assert_eq!(through(&input, input.len()).await, input);
    }

    #[tokio::test]
    async fn what_cannot_be_followed_passes_unchanged() {
        // Not HTTP/2, a CONTINUATION with no HEADERS, an undecodable block.
        let mut bad = PREFACE.to_vec();
        bad.extend(frame(CONTINUATION, END_HEADERS, 1, b"\x80"));
        let mut garbled = PREFACE.to_vec();
        garbled.extend(frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff\xff"));
        for input in [b"GET / HTTP/1.1\r\n\r\n".to_vec(), bad, garbled] {
            assert_eq!(through(&input, 3).await, input);
        }
    }

    #[test]
    fn long_blocks_are_cut_into_continuations() {
        let big = vec![b'x'; 3 * MAX_FRAME];
        let p = Pending {
            stream: [0, 0, 0, 5],
            flags: END_STREAM | END_HEADERS | PRIORITY,
            priority: Some([0, 0, 0, 0, 1]),
            block: Vec::new(),
        };
        let fields = vec![(b"x-big".to_vec(), big.clone())];
        let mut bytes = PREFACE.to_vec();
        bytes.extend(encode_frames(&p, &fields));
        let blocks = headers_seen(&bytes);
        assert_eq!(blocks, vec![fields]);
        let mut rest = &bytes[PREFACE.len()..];
        let mut frames = 0;
        while !rest.is_empty() {
            let length =
                usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            assert!(length <= MAX_FRAME);
            rest = &rest[FRAME_HEADER + length..];
            frames += 1;
        }
        assert_eq!(frames, 4);
    }
}
